"""Exceptions of channels-rs. Full channels raise channels' own
``channels.exceptions.ChannelFull``, so existing ``except`` clauses keep working.

When Redis answers a command with an error, the layers raise ``ServerRefused``
or one of its subclasses, whose text carries the server's own words. It is a
``ConnectionError``, as every failure to reach Redis is, so code that catches
``ConnectionError`` around a layer call keeps catching it::

    ConnectionError
    └── ServerRefused          the server answered "no" (its reply in .reply)
        ├── AccessDenied       credentials or ACL: WRONGPASS, NOAUTH, NOPERM
        └── WritesRefused      no writes now: READONLY, MISCONF, NOREPLICAS
            └── OutOfMemory    OOM: the server is at its maxmemory
"""


class InvalidMessage(TypeError, AssertionError):
    """A message that is not a dict, or that already holds ``__asgi_channel__``.

    It is also an ``AssertionError`` because that is what channels' and
    channels_redis's layers raise for the same mistakes.
    """


class ServerRefused(ConnectionError):
    """The Redis server refused the command. ``server`` names it (no
    password) and ``reply`` is its error reply, word for word."""

    server: str
    reply: str


class AccessDenied(ServerRefused):
    """The server refused the layer's credentials (WRONGPASS, NOAUTH) or its
    ACL denies a command or key the layer needs (NOPERM). Waiting does not
    mend it: the settings or the server's ACL must change."""


class WritesRefused(ServerRefused):
    """The server takes no writes now: a read-only replica (READONLY), a
    failed save to disk (MISCONF), or too few replicas (NOREPLICAS). Nothing
    of the refused call was written."""


class OutOfMemory(WritesRefused):
    """The server is at its ``maxmemory`` and refuses writes (OOM). Nothing
    of the refused call was written; messages already queued can still be
    received."""
