"""rediss:// against a real TLS server with certificates made for the run."""

import pytest

from channels_rs import RedisChannelLayer
from conftest import group_round_trip, require_tls
from redis_server import Certificates, RedisServer


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    require_tls()
    certificates = Certificates(tmp_path_factory.mktemp("tls"))
    server = RedisServer(tls=certificates)
    server.certificates = certificates
    yield server
    server.stop()


async def test_rediss_verifying_the_server_certificate(tls_server):
    url = f"rediss://127.0.0.1:{tls_server.port}"
    ca = tls_server.certificates.ca
    await group_round_trip(
        RedisChannelLayer(hosts=[{"address": url, "ssl_ca_certs": ca}])
    )


async def test_a_server_signed_by_another_ca_is_refused(tls_server, tmp_path):
    stranger = Certificates(tmp_path)
    hosts = [
        {
            "address": f"rediss://127.0.0.1:{tls_server.port}",
            "ssl_ca_certs": stranger.ca,
            "socket_connect_timeout": 2,
        }
    ]
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{tls_server.port}") as error:
        await RedisChannelLayer(hosts=hosts).send("chan", {"type": "x"})
    assert (
        "certificate" in str(error.value).lower()
        or "issuer" in str(error.value).lower()
    )


async def test_verification_off_as_redis_py_spells_it(tls_server):
    hosts = [
        {
            "host": "127.0.0.1",
            "port": tls_server.port,
            "ssl": True,
            "ssl_cert_reqs": "none",
        }
    ]
    await group_round_trip(RedisChannelLayer(hosts=hosts))
