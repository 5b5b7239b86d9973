"""The chat's websocket consumers. Everything between them goes through the
channel layer, so users on different Daphne processes (sharing Redis) meet in
the same rooms, and a background task reaches all of them.

Who is connected is not stored anywhere: a "who" page asks every chat
consumer to answer (a roll call sent to a group), then hears of arrivals and
departures as they happen."""

import os
import socket
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .names import user_name

# Every chat consumer, in every room: announcements and roll calls.
MEMBERS = "chat.members"
# Every open "who" page: arrivals and departures.
WATCHERS = "chat.watchers"
# Which process serves a user, for the "who" page.
SERVER = f"{socket.gethostname()} pid {os.getpid()}"


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        query = parse_qs(self.scope["query_string"].decode())
        self.name = user_name(query.get("name", [""])[0])
        self.room_group = f"room.{self.room}"
        for group in (self.room_group, MEMBERS):
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.to_room("chat.joined")
        await self.channel_layer.group_send(WATCHERS, self.presence())

    async def disconnect(self, code):
        for group in (self.room_group, MEMBERS):
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.to_room("chat.left")
        gone = {"type": "presence.gone", "channel": self.channel_name}
        await self.channel_layer.group_send(WATCHERS, gone)

    async def receive_json(self, content):
        text = str(content.get("text", "")).strip()[:500]
        if text:
            await self.to_room("chat.message", text=text)

    async def to_room(self, kind, **fields):
        event = {"type": kind, "name": self.name, **fields}
        await self.channel_layer.group_send(self.room_group, event)

    def presence(self):
        return {
            "type": "presence.present",
            "channel": self.channel_name,
            "name": self.name,
            "room": self.room,
            "server": SERVER,
        }

    # Handlers for what the layer brings (the event type, dots as underscores).

    async def chat_message(self, event):
        await self.send_json({"kind": "message", **pick(event, "name", "text")})

    async def chat_joined(self, event):
        await self.send_json({"kind": "joined", "name": event["name"]})

    async def chat_left(self, event):
        await self.send_json({"kind": "left", "name": event["name"]})

    async def chat_announcement(self, event):
        await self.send_json({"kind": "announcement", "text": event["text"]})

    async def presence_roll_call(self, event):
        await self.channel_layer.send(event["reply_to"], self.presence())


class WhoConsumer(AsyncJsonWebsocketConsumer):
    groups = [WATCHERS]

    async def connect(self):
        await self.accept()
        roll_call = {"type": "presence.roll_call", "reply_to": self.channel_name}
        await self.channel_layer.group_send(MEMBERS, roll_call)

    async def presence_present(self, event):
        fields = pick(event, "channel", "name", "room", "server")
        await self.send_json({"kind": "present", **fields})

    async def presence_gone(self, event):
        await self.send_json({"kind": "gone", "channel": event["channel"]})


def pick(event, *keys):
    return {key: event[key] for key in keys}
