from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/async/", consumers.AsyncChatConsumer.as_asgi()),
    path("ws/sync/", consumers.SyncChatConsumer.as_asgi()),
    path("ws/pid/", consumers.PidConsumer.as_asgi()),
]
