"""What both layers share on the Python side."""

from channels.layers import BaseChannelLayer


class CoreLayer(BaseChannelLayer):
    """A layer whose Rust core's receive() returns a queued message at once,
    or a future of the next one."""

    async def receive(self, channel):
        """The next message on ``channel``, waiting for one if none is queued."""
        waiter = self._core.receive(channel)
        if isinstance(waiter, dict):
            return waiter
        try:
            message = await waiter
        except BaseException:
            # Cancelled, possibly after a message was handed over: put it back.
            self._core.finish(channel, waiter, False)
            raise
        # Only now is it this consumer's: till here a kill -9 loses nothing.
        self._core.finish(channel, waiter, True)
        return message
