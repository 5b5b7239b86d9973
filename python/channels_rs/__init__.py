"""Channel layers for Django Channels with a Rust core.

Switch a project by changing the BACKEND in ``CHANNEL_LAYERS``, e.g.
``"channels_rs.InMemoryChannelLayer"``.
"""

from .exceptions import InvalidMessage
from .layers import InMemoryChannelLayer

__all__ = ["InMemoryChannelLayer", "InvalidMessage"]
