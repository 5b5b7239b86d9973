"""Exceptions of channels-rs. Full channels raise channels' own
``channels.exceptions.ChannelFull``, so existing ``except`` clauses keep working."""


class InvalidMessage(TypeError, AssertionError):
    """A message that is not a dict, or that already holds ``__asgi_channel__``.

    It is also an ``AssertionError`` because that is what channels' and
    channels_redis's layers raise for the same mistakes.
    """
