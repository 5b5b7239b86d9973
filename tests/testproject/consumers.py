"""Consumers that join the broadcast group on connect and leave it on
disconnect: one async, one sync (which reaches the layer via async_to_sync),
and one that first says which process serves it."""

import os

from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer

GROUP = "broadcast"


class AsyncChatConsumer(AsyncWebsocketConsumer):
    groups = [GROUP]

    async def broadcast_message(self, event):
        await self.send(text_data=event["text"])

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(
            GROUP, {"type": "broadcast.message", "text": text_data}
        )


class SyncChatConsumer(WebsocketConsumer):
    def connect(self):
        async_to_sync(self.channel_layer.group_add)(GROUP, self.channel_name)
        self.accept()

    def disconnect(self, code):
        async_to_sync(self.channel_layer.group_discard)(GROUP, self.channel_name)

    def broadcast_message(self, event):
        self.send(text_data=event["text"])


class PidConsumer(AsyncChatConsumer):
    """Says which process serves it, then broadcasts as the others."""

    async def connect(self):
        await super().connect()
        await self.send(text_data=f"pid:{os.getpid()}")
