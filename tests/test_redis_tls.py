"""rediss:// against real TLS servers with certificates made for the run:
the server's certificate checked against ssl_ca_certs, or not checked
(#insecure, and every spelling of ssl_cert_reqs redis-py takes), and a
client certificate for a server that asks for one; both Redis layers."""

import ssl

import pytest

from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer
from conftest import group_round_trip, require_tls
from redis_server import Certificates, RedisServer

KINDS = [RedisChannelLayer, RedisPubSubChannelLayer]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    require_tls()
    return Certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(certificates):
    server = RedisServer(tls=certificates)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict_server(certificates):
    """A TLS server that wants a client certificate signed by its CA."""
    server = RedisServer(tls=certificates, client_certificates=True)
    yield server
    server.stop()


async def refused(hosts, *words):
    """The ConnectionError a send to `hosts` raises, in lower case."""
    with pytest.raises(ConnectionError) as error:
        await RedisChannelLayer(hosts=hosts).send("chan", {"type": "x"})
    text = str(error.value).lower()
    assert any(word in text for word in words), text
    return text


@pytest.mark.parametrize("kind", KINDS)
async def test_rediss_verifying_the_server_certificate(tls_server, certificates, kind):
    url = f"rediss://127.0.0.1:{tls_server.port}"
    hosts = [{"address": url, "ssl_ca_certs": certificates.ca}]
    await group_round_trip(kind(hosts=hosts))


async def test_a_server_signed_by_another_ca_is_refused(tls_server, tmp_path):
    stranger = Certificates(tmp_path)
    url = f"rediss://127.0.0.1:{tls_server.port}"
    hosts = [{"address": url, "ssl_ca_certs": stranger.ca, "socket_connect_timeout": 2}]
    text = await refused(hosts, "certificate", "issuer")
    assert f"127.0.0.1:{tls_server.port}" in text


@pytest.mark.parametrize("kind", KINDS)
async def test_insecure_skips_the_check(tls_server, kind):
    url = f"rediss://127.0.0.1:{tls_server.port}"
    await refused(
        [{"address": url, "socket_connect_timeout": 2}], "certificate", "issuer"
    )
    await group_round_trip(kind(hosts=[url + "#insecure"]))


@pytest.mark.parametrize("reqs", ["none", None, ssl.CERT_NONE], ids=repr)
async def test_verification_off_as_redis_py_spells_it(tls_server, reqs):
    hosts = [
        {
            "host": "127.0.0.1",
            "port": tls_server.port,
            "ssl": True,
            "ssl_cert_reqs": reqs,
        }
    ]
    await group_round_trip(RedisChannelLayer(hosts=hosts))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_client_certificate_for_a_server_that_asks(
    strict_server, certificates, kind
):
    entry = {
        "address": f"rediss://127.0.0.1:{strict_server.port}",
        "ssl_ca_certs": certificates.ca,
        "socket_connect_timeout": 2,
    }
    await refused([entry], "certificate", "handshake", "reset", "closed", "broken")
    entry.update(
        ssl_certfile=certificates.client_cert, ssl_keyfile=certificates.client_key
    )
    await group_round_trip(kind(hosts=[entry]))
