"""The chat's websocket consumers. Everything between them goes through the
channel layer, so users on different Daphne processes (sharing Redis) meet in
the same rooms, and a background task reaches all of them.

Who is connected is not stored anywhere: the "live" page asks every chat
consumer to answer (a roll call sent to a group), then hears of arrivals and
departures as they happen. It also shows what its own server's layer is
doing: `layer.stats()` and how long the last messages took to arrive."""

import asyncio
import os
import socket
import time
from collections import deque
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .names import user_name

# Every chat consumer, in every room: announcements and roll calls.
MEMBERS = "chat.members"
# Every open "live" page: arrivals and departures.
WATCHERS = "chat.watchers"
# Which process serves a user, for the "live" page.
SERVER = f"{socket.gethostname()} pid {os.getpid()}"
# Milliseconds from a broadcast's group_send to its arrival at a consumer of
# this process, for the last messages delivered here.
LATENCIES = deque(maxlen=40)
# How often a live page hears its server's figures.
LIVE_INTERVAL = 1.0


def stamped(event):
    """`event` with its send time, so its receivers can tell its latency."""
    return {**event, "sent": time.time()}


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
        await self.channel_layer.group_send(self.room_group, stamped(event))

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
        arrived(event)
        await self.send_json({"kind": "message", **pick(event, "name", "text")})

    async def chat_joined(self, event):
        await self.send_json({"kind": "joined", "name": event["name"]})

    async def chat_left(self, event):
        await self.send_json({"kind": "left", "name": event["name"]})

    async def chat_announcement(self, event):
        arrived(event)
        await self.send_json({"kind": "announcement", "text": event["text"]})

    async def presence_roll_call(self, event):
        await self.channel_layer.send(event["reply_to"], self.presence())


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """The live page: who is connected on every server, and, each second,
    this server's layer statistics and recent latencies."""

    groups = [WATCHERS]

    async def connect(self):
        await self.accept()
        roll_call = {"type": "presence.roll_call", "reply_to": self.channel_name}
        await self.channel_layer.group_send(MEMBERS, roll_call)
        self.ticker = asyncio.create_task(self.report())

    async def disconnect(self, code):
        self.ticker.cancel()

    async def report(self):
        while True:
            await self.send_json(
                {
                    "kind": "figures",
                    "server": SERVER,
                    "layer": type(self.channel_layer).__name__,
                    "stats": self.channel_layer.stats(),
                    "latencies": [round(ms, 2) for ms in LATENCIES],
                }
            )
            await asyncio.sleep(LIVE_INTERVAL)

    async def presence_present(self, event):
        fields = pick(event, "channel", "name", "room", "server")
        await self.send_json({"kind": "present", **fields})

    async def presence_gone(self, event):
        await self.send_json({"kind": "gone", "channel": event["channel"]})


def arrived(event):
    # An event another program sent may carry no send time.
    if "sent" in event:
        LATENCIES.append((time.time() - event["sent"]) * 1000)


def pick(event, *keys):
    return {key: event[key] for key in keys}
