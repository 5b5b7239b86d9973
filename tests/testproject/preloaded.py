"""The ASGI application as `gunicorn --preload` imports it, in the master:
the layer is made and used here, before the workers fork."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .asgi import application  # noqa: F401 - what gunicorn serves

async_to_sync(get_channel_layer().group_send)("preloaded", {"type": "warm.up"})
