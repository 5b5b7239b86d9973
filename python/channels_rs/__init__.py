"""Channel layers for Django Channels with a Rust core.

Switch a project by changing the BACKEND in ``CHANNEL_LAYERS``, e.g.
``"channels_rs.InMemoryChannelLayer"`` or ``"channels_rs.RedisChannelLayer"``.
"""

from .core import RedisChannelLayer
from .exceptions import InvalidMessage
from .layers import InMemoryChannelLayer
from .settings import layers_from_env

__all__ = [
    "InMemoryChannelLayer",
    "InvalidMessage",
    "RedisChannelLayer",
    "layers_from_env",
]
