"""Message bytes: ours against Python's msgpack and channels_redis's
serializers, which write what a mixed fleet shares in Redis."""

import json
import math
import random

import msgpack
import pytest
from channels_redis.serializers import registry

from channels_rs import RedisChannelLayer, serializers
from channels_rs._core import Serializer
from conftest import TaggedJSONSerializer

INTS = [
    0,
    1,
    127,
    128,
    255,
    256,
    65535,
    65536,
    2**32 - 1,
    2**32,
    2**63,
    2**64 - 1,
    -1,
    -32,
    -33,
    -128,
    -129,
    -32768,
    -32769,
    -(2**31),
    -(2**31) - 1,
    -(2**63),
]
SIZES = [0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536]


def ours(format="msgpack", keys=(), prefix=0, expiry=60):
    return Serializer(format, [k.encode() for k in keys], prefix, expiry)


def theirs(format="msgpack", keys=None, prefix=0, expiry=60):
    return registry.get_serializer(
        format,
        symmetric_encryption_keys=keys,
        random_prefix_length=prefix,
        expiry=expiry,
    )


def sample_messages():
    yield {"a": True, "b": None, "c": {"d": []}}
    yield {"type": "chat.message", "text": "héllo ☃", "n": 3, "f": 1.5}
    for n in INTS:
        yield {"n": n}
    for size in SIZES:
        yield {
            "s": "x" * size,
            "b": b"\x00" * size,
            "l": list(range(size % 300)),
            "m": {f"k{i}": i for i in range(size % 40)},
        }
    yield {"nested": [[[{"deep": [1, (2, 3)]}]]], "t": (1, "two", b"3")}
    yield {"floats": [0.0, -0.0, 1e300, -2.5, math.inf, -math.inf]}
    yield {"bytearray": bytearray(b"abc"), "view": memoryview(b"xyz")}
    rng = random.Random(3)
    leaves = [None, True, False, 0, -1, 2**40, 0.25, "", "text", b"", b"\xff\x00"]
    for _ in range(300):
        yield {"r": random_value(rng, leaves, 4)}


def random_value(rng, leaves, depth):
    kind = rng.randrange(4 if depth else 1)
    if kind == 0:
        return rng.choice(leaves)
    if kind == 1:
        return [random_value(rng, leaves, depth - 1) for _ in range(rng.randrange(5))]
    if kind == 2:
        return tuple(
            random_value(rng, leaves, depth - 1) for _ in range(rng.randrange(3))
        )
    return {
        f"k{i}": random_value(rng, leaves, depth - 1) for i in range(rng.randrange(5))
    }


@pytest.mark.parametrize("message", list(sample_messages()), ids=lambda m: repr(m)[:40])
def test_msgpack_bytes_match_python_msgpack(message):
    packed = ours().serialize(message)
    assert packed == msgpack.packb(message)
    assert ours().deserialize(packed) == msgpack.unpackb(packed)


def test_documented_vector():
    packed = ours().serialize({"a": True, "b": None, "c": {"d": []}})
    assert packed.hex(" ") == "83 a1 61 c3 a1 62 c0 a1 63 81 a1 64 90"


def test_nan_packs_like_msgpack():
    assert ours().serialize({"x": math.nan}) == msgpack.packb({"x": math.nan})


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
def test_out_of_range_ints_are_refused(value):
    with pytest.raises(OverflowError):
        ours().serialize({"n": value})


@pytest.mark.parametrize(
    "message, problem",
    [
        ({1: "int key"}, "keys must be str"),
        ({"nested": {(1, 2): "tuple key"}}, "keys must be str"),
        ({"x": object()}, "can not serialize 'object' object"),
        ({"x": {1, 2}}, "can not serialize 'set' object"),
    ],
)
def test_unencodable_messages_raise_type_error(message, problem):
    with pytest.raises(TypeError, match=problem):
        ours().serialize(message)


def test_too_deep_message_is_refused():
    message = {}
    inner = message
    for _ in range(600):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(ValueError, match="deeper than 512"):
        ours().serialize(message)


def test_non_dict_is_refused():
    with pytest.raises(TypeError, match="message must be a dict, not list"):
        ours().serialize([1, 2])


def test_random_prefix_is_added_and_stripped_both_ways():
    message = {"type": "x", "n": 1}
    mine = ours(prefix=12).serialize(message)
    assert len(mine) == 12 + len(msgpack.packb(message))
    assert mine[12:] == msgpack.packb(message)
    assert ours(prefix=12).serialize(message)[:12] != mine[:12]
    assert theirs(prefix=12).deserialize(mine) == message
    assert ours(prefix=12).deserialize(theirs(prefix=12).serialize(message)) == message


def test_json_bytes_match_channels_redis():
    for message in [{"type": "x", "text": "héllo ☃", "n": [1, 2.5, None, True]}, {}]:
        mine = ours("json").serialize(message)
        assert mine == theirs("json").serialize(message)
        assert mine == json.dumps(message).encode()
        assert ours("json").deserialize(mine) == message


def test_unknown_format_is_named():
    with pytest.raises(ValueError, match="unknown serializer_format 'yaml'"):
        ours("yaml")


@pytest.mark.parametrize("format", ["msgpack", "json"])
def test_encrypted_messages_interoperate(format):
    message = {"type": "secret", "text": "only for us"}
    keys = ["new-key", "old-key"]
    mine = ours(format, keys, prefix=12).serialize(message)
    assert theirs(format, keys, prefix=12).deserialize(mine) == message
    assert (
        ours(format, keys, prefix=12).deserialize(
            theirs(format, keys, prefix=12).serialize(message)
        )
        == message
    )
    assert msgpack.packb(message) not in mine


def test_key_rotation_reads_tokens_made_with_an_older_key():
    message = {"type": "x"}
    made_with_old = theirs(keys=["old-key"]).serialize(message)
    assert ours(keys=["new-key", "old-key"]).deserialize(made_with_old) == message


def test_wrong_key_is_a_clear_error():
    token = ours(keys=["right"]).serialize({"type": "x"})
    with pytest.raises(ValueError, match="could not be decrypted"):
        ours(keys=["wrong"]).deserialize(token)


def test_garbage_bytes_never_crash_the_decoder():
    rng = random.Random(11)
    valid = [msgpack.packb(m) for m in list(sample_messages())[:50]]
    for _ in range(5000):
        if rng.random() < 0.5:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 3)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data[: rng.randrange(len(data) + 1)])
        try:
            ours().deserialize(data)
        except ValueError:
            pass


# Custom serializers: a class registered with channels_redis's registry
# (conftest's "tagged"), or with ours.

TAGGED = {"type": "x", "pair": (1, "two"), "text": "héllo"}


def layer_with(**config):
    return RedisChannelLayer(hosts=["redis://127.0.0.1:1"], **config)


def test_a_registered_serializer_writes_channels_redis_bytes():
    mine = layer_with(serializer_format="tagged", random_prefix_length=0)
    assert mine.serialize(TAGGED) == theirs("tagged").serialize(TAGGED)
    assert mine.serialize(TAGGED).startswith(b"tagged:")
    # Its tuples survive, as msgpack's would not: the class did the work.
    assert mine.deserialize(theirs("tagged").serialize(TAGGED)) == TAGGED


def test_a_registered_serializer_keeps_prefix_and_encryption_its_own_way():
    mine = layer_with(serializer_format="tagged", symmetric_encryption_keys=["k"])
    upstream = theirs("tagged", keys=["k"], prefix=12)
    stored = mine.serialize(TAGGED)
    assert b"tagged" not in stored and b"two" not in stored
    assert upstream.deserialize(stored) == TAGGED
    assert mine.deserialize(upstream.serialize(TAGGED)) == TAGGED


def test_our_registry_needs_no_channels_redis_registration():
    class Upper:
        def __init__(self, symmetric_encryption_keys, random_prefix_length, expiry):
            self.made_with = (symmetric_encryption_keys, random_prefix_length, expiry)

        def serialize(self, message):
            return json.dumps(message).upper().encode()

        def deserialize(self, data):
            return json.loads(data.decode().lower())

    serializers.registry.register_serializer("upper-json", Upper)
    layer = layer_with(serializer_format="upper-json", expiry=30)
    assert layer.serialize({"type": "x"}) == b'{"TYPE": "X"}'
    assert layer.deserialize(b'{"TYPE": "X"}') == {"type": "x"}


def test_registering_a_non_serializer_or_a_built_in_name_is_refused():
    with pytest.raises(TypeError, match="needs serialize"):
        serializers.registry.register_serializer("bad", dict)
    with pytest.raises(ValueError, match="'json' is built in"):
        serializers.registry.register_serializer("json", TaggedJSONSerializer)


def test_an_unknown_format_says_how_to_register_one():
    with pytest.raises(ValueError, match="unknown serializer_format 'yaml'.*register"):
        layer_with(serializer_format="yaml")


def test_a_custom_serializers_error_reaches_the_sender():
    with pytest.raises(TypeError, match="not JSON serializable"):
        layer_with(serializer_format="tagged").serialize({"type": "x", "v": {1, 2}})
