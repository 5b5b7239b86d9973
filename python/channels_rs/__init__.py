"""Channel layers for Django Channels with a Rust core.

Switch a project by changing the BACKEND in ``CHANNEL_LAYERS``, e.g.
``"channels_rs.InMemoryChannelLayer"``, ``"channels_rs.RedisChannelLayer"`` or
``"channels_rs.RedisPubSubChannelLayer"``.
"""

from .core import RedisChannelLayer
from .exceptions import InvalidMessage
from .layers import InMemoryChannelLayer
from .pubsub import RedisPubSubChannelLayer
from .settings import layers_from_env

__all__ = [
    "InMemoryChannelLayer",
    "InvalidMessage",
    "RedisChannelLayer",
    "RedisPubSubChannelLayer",
    "layers_from_env",
]
