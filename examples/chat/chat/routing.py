from django.urls import path

from . import (
    consumers,
    names,  # noqa: F401  (registers the room converter)
)

websocket_urlpatterns = [
    path("ws/rooms/<room:room>/", consumers.ChatConsumer.as_asgi()),
    path("ws/live/", consumers.LiveConsumer.as_asgi()),
]
