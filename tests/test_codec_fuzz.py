"""Property tests of the msgpack codec (hypothesis): any message a consumer
may send packs byte for byte like msgpack.packb and reads back like
msgpack.unpackb; anything else is refused before a byte reaches Redis; no
input bytes crash the decoder."""

import math

import msgpack
import pytest
from asgiref.sync import async_to_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels_rs import RedisChannelLayer
from channels_rs._core import Serializer
from redis_cluster import keys_in
from redis_server import command

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(), inner, max_size=5)
    ),
    max_leaves=40,
)
MESSAGES = st.dictionaries(st.text(), VALUES, max_size=8)
BAD = (
    st.integers(min_value=2**64)
    | st.integers(max_value=-(2**63) - 1)
    | st.sets(st.integers(), min_size=1)
    | st.builds(object)
    | st.complex_numbers()
    | st.dictionaries(st.integers() | st.tuples(st.integers()), VALUES, min_size=1)
)
FUZZ = settings(max_examples=400, deadline=None)

serializer = Serializer("msgpack", [], 0, 60)


@FUZZ
@given(MESSAGES)
def test_any_message_packs_and_reads_like_msgpack(message):
    packed = serializer.serialize(message)
    assert packed == msgpack.packb(message)
    assert serializer.deserialize(packed) == msgpack.unpackb(packed)


@settings(max_examples=150, deadline=None)
@given(MESSAGES, st.floats(allow_nan=True, allow_infinity=True))
def test_special_floats_pack_like_msgpack(message, number):
    message["number"] = number
    packed = serializer.serialize(message)
    assert packed == msgpack.packb(message)
    back = serializer.deserialize(packed)["number"]
    assert back == number or (math.isnan(back) and math.isnan(number))


def with_bad_value(message, bad, path):
    """`message` with `bad` put somewhere inside it, chosen by `path`."""
    target = message
    for step in path:
        containers = [v for v in target.values() if isinstance(v, dict)]
        if not containers:
            break
        target = containers[step % len(containers)]
    target["bad"] = bad
    return message


@pytest.fixture(scope="module")
def fuzz_group(redis):
    """A layer whose group has members: a normal channel and a process-local
    one, on the session's server."""
    layer = RedisChannelLayer(hosts=[redis.url], prefix="fuzz")
    for member in ("fuzz-member", async_to_sync(layer.new_channel)()):
        async_to_sync(layer.group_add)("fuzz-group", member)
    yield layer, redis
    async_to_sync(layer.flush)()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(MESSAGES, BAD, st.lists(st.integers(0, 7), max_size=3))
def test_anything_else_is_refused_and_nothing_is_written(
    fuzz_group, message, bad, path
):
    layer, redis = fuzz_group
    message = with_bad_value(message, bad, path)
    with pytest.raises((TypeError, ValueError, OverflowError)):
        layer.send_sync("fuzz-channel", message)
    with pytest.raises((TypeError, ValueError, OverflowError)):
        layer.group_send_sync("fuzz-group", message)
    # Only the group itself: no member's queue got a byte.
    assert keys_in(command(redis.port, "KEYS", "fuzz*")) == [b"fuzz:group:fuzz-group"]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_no_bytes_crash_the_decoder(data):
    try:
        ours = serializer.deserialize(data)
    except ValueError:
        return
    assert ours == msgpack.unpackb(data)
