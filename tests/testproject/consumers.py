"""Two consumers that join the broadcast group on connect and leave it on
disconnect: one async, one sync (which reaches the layer via async_to_sync)."""

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
