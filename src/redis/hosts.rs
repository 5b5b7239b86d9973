//! The `hosts` entries of a layer, turned into shards: addresses, Sentinel,
//! TLS certificates and timeouts.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use redis::cluster::ClusterClient;
use redis::io::tcp::socket2::TcpKeepalive;
use redis::io::tcp::TcpSettings;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult, TlsCertificates,
};

use super::connections::{client, quiet, Nodes, Shard, Source, Timeouts};
use super::sentinel::Watched;
use crate::stats::Stats;

/// One `hosts` entry: its address and name as hosts.py worked them out.
#[derive(FromPyObject)]
pub struct HostSpec {
    /// How messages and errors name it: no password.
    #[pyo3(item)]
    name: String,
    /// The server; for Sentinel, only the master's credentials and db.
    #[pyo3(item)]
    url: String,
    #[pyo3(item, default)]
    sentinels: Vec<String>,
    #[pyo3(item, default)]
    master_name: Option<String>,
    /// Startup nodes of a Redis Cluster; `url` is then the first of them.
    #[pyo3(item, default)]
    cluster: Vec<String>,
    /// The rest under redis-py's names: timeouts in seconds, and TLS
    /// certificates as paths to PEM files.
    #[pyo3(item, default)]
    socket_connect_timeout: Option<f64>,
    #[pyo3(item, default)]
    socket_timeout: Option<f64>,
    #[pyo3(item, default)]
    ssl_ca_certs: Option<String>,
    #[pyo3(item, default)]
    ssl_certfile: Option<String>,
    #[pyo3(item, default)]
    ssl_keyfile: Option<String>,
    /// TCP keepalive probes, at the system's timings.
    #[pyo3(item, default)]
    socket_keepalive: bool,
    /// Seconds a connection may idle before a PING checks it; 0 is never.
    #[pyo3(item, default)]
    health_check_interval: Option<f64>,
}

/// How each connection's socket is set up.
fn tcp_settings(spec: &HostSpec) -> TcpSettings {
    // Small commands must leave at once, not wait for Nagle.
    let settings = TcpSettings::default().set_nodelay(true);
    if spec.socket_keepalive {
        settings.set_keepalive(TcpKeepalive::new())
    } else {
        settings
    }
}

/// The certificates a TLS connection trusts and presents, read from files.
fn tls_certificates(spec: &HostSpec) -> PyResult<redis::TlsCertificates> {
    let read = |what: &str, path: &str| {
        std::fs::read(path)
            .map_err(|err| PyValueError::new_err(format!("cannot read {what} {path:?}: {err}")))
    };
    let client_tls = match (&spec.ssl_certfile, &spec.ssl_keyfile) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("ssl_certfile", cert)?,
            client_key: read("ssl_keyfile", key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(PyValueError::new_err(
                "ssl_certfile and ssl_keyfile go together",
            ))
        }
    };
    let root_cert = spec
        .ssl_ca_certs
        .as_deref()
        .map(|path| read("ssl_ca_certs", path))
        .transpose()?;
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// Waits this long by default before reporting a connection or reply error.
const DEFAULT_TIMEOUT: f64 = 5.0;

/// A bad address's error, naming the entry.
fn bad(name: &str) -> impl Fn(RedisError) -> PyErr + '_ {
    move |err| PyValueError::new_err(format!("bad Redis address {name}: {err}"))
}

/// The shard a hosts entry names; it counts on `stats`.
pub fn shard(spec: HostSpec, stats: &Arc<Stats>) -> PyResult<Shard> {
    let tcp = tcp_settings(&spec);
    let info = spec
        .url
        .as_str()
        .into_connection_info()
        .map_err(bad(&spec.name))?;
    let certificates = tls_certificates(&spec)?;
    let timeouts = timeouts(&spec)?;
    let source = if !spec.cluster.is_empty() {
        cluster(&spec, info.set_tcp_settings(tcp), certificates, timeouts)?
    } else if let Some(master) = &spec.master_name {
        let node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(quiet(info).redis_settings().clone())
            .set_tcp_settings(tcp);
        sentinel(&spec, master, node)?
    } else {
        let client = client(info.set_tcp_settings(tcp), &certificates);
        Source::Direct(Box::new(client.map_err(bad(&spec.name))?))
    };
    Ok(Shard::new(source, timeouts, spec.name, Arc::clone(stats)))
}

/// A Redis Cluster from its startup nodes; `template` is the first of them.
fn cluster(
    spec: &HostSpec,
    template: ConnectionInfo,
    certificates: TlsCertificates,
    timeouts: Timeouts,
) -> PyResult<Source> {
    let client = |reply: Option<Duration>| {
        // redis-rs waits 1.3 s to 11 min between retries by default, so a
        // blocking pop caught in a failover could stall for minutes.
        let mut builder = ClusterClient::builder(spec.cluster.iter().map(String::as_str))
            .connection_timeout(timeouts.connect)
            .min_retry_wait(50)
            .max_retry_wait(500);
        if let Some(reply) = reply {
            builder = builder.response_timeout(reply);
        }
        if matches!(template.addr(), ConnectionAddr::TcpTls { .. }) {
            builder = builder.certs(certificates.clone());
        }
        builder.build().map_err(bad(&spec.name))
    };
    // Blocking pops wait on a client of their own, without a reply timeout.
    Ok(Source::Cluster {
        shared: Box::new(client(Some(timeouts.reply))?),
        blocking: Box::new(client(None)?),
        nodes: Box::new(Nodes {
            startup: startup_nodes(&spec.cluster).map_err(bad(&spec.name))?,
            template,
            certificates,
        }),
    })
}

/// The master that `spec`'s Sentinels name, reached with `node`'s settings.
fn sentinel(spec: &HostSpec, master: &str, node: SentinelNodeConnectionInfo) -> PyResult<Source> {
    let sentinels = spec
        .sentinels
        .iter()
        .map(|url| url.as_str().into_connection_info().map(quiet))
        .collect::<RedisResult<Vec<_>>>()
        .map_err(bad(&spec.name))?;
    let client = SentinelClient::build(sentinels, master, Some(node), SentinelServerType::Master)
        .map_err(bad(&spec.name))?;
    Ok(Source::Sentinel(Watched::new(client, spec.name.clone())))
}

/// The host and port of each startup node.
fn startup_nodes(urls: &[String]) -> RedisResult<Vec<(String, u16)>> {
    let mut nodes = Vec::new();
    for url in urls {
        match url.as_str().into_connection_info()?.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                nodes.push((host.clone(), *port));
            }
            _ => {}
        }
    }
    Ok(nodes)
}

fn timeouts(spec: &HostSpec) -> PyResult<Timeouts> {
    let seconds = |what: &str, value: Option<f64>| {
        let value = value.unwrap_or(DEFAULT_TIMEOUT);
        Duration::try_from_secs_f64(value).map_err(|_| {
            PyValueError::new_err(format!(
                "{what} must be a positive number of seconds, got {value}"
            ))
        })
    };
    let health_check = match spec.health_check_interval {
        None | Some(0.0) => None,
        every => Some(seconds("health_check_interval", every)?),
    };
    Ok(Timeouts {
        connect: seconds("socket_connect_timeout", spec.socket_connect_timeout)?,
        reply: seconds("socket_timeout", spec.socket_timeout)?,
        health_check,
    })
}
