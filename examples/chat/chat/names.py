"""What a room and a user may be called. Rooms become channel layer group
names, which allow only ASCII letters, digits, hyphens, underscores and
periods."""

import re

from django.urls import register_converter

ROOM = r"[-a-zA-Z0-9_.]{1,50}"


class RoomConverter:
    regex = ROOM

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(RoomConverter, "room")


def valid_room(text):
    return re.fullmatch(ROOM, text) is not None


def user_name(text):
    """A display name: trimmed, at most 30 characters, "guest" if empty."""
    return " ".join(text.split())[:30] or "guest"
