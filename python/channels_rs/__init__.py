"""Channel layers for Django Channels with a Rust core.

Switch a project by changing the BACKEND in ``CHANNEL_LAYERS``, e.g.
``"channels_rs.InMemoryChannelLayer"``, ``"channels_rs.RedisChannelLayer"`` or
``"channels_rs.RedisPubSubChannelLayer"``.
"""

import atexit

from . import _core
from .core import RedisChannelLayer
from .exceptions import InvalidMessage
from .layers import InMemoryChannelLayer
from .pubsub import RedisPubSubChannelLayer
from .settings import layers_from_env

# Runtime threads must not enter Python once it shuts down (see interpreter.rs).
atexit.register(_core.python_exits)

__all__ = [
    "InMemoryChannelLayer",
    "InvalidMessage",
    "RedisChannelLayer",
    "RedisPubSubChannelLayer",
    "layers_from_env",
]
