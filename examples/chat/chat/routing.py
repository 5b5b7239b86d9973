from django.urls import path

from . import (
    consumers,
    names,  # noqa: F401  (registers the room converter)
)

websocket_urlpatterns = [
    path("ws/rooms/<room:room>/", consumers.ChatConsumer.as_asgi()),
    path("ws/who/", consumers.WhoConsumer.as_asgi()),
]
