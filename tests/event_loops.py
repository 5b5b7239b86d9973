"""The event loops the suite can run on (`pytest --loop=...`): asyncio's
own, uvloop (what uvicorn picks when `uvicorn[standard]` is installed), and
one that cannot watch a descriptor, as Windows' ProactorEventLoop cannot,
so the bridge must wake it with call_soon_threadsafe."""

import asyncio


class NoReaderEventLoop(asyncio.SelectorEventLoop):
    """asyncio's loop without add_reader/remove_reader, which raise
    NotImplementedError as ProactorEventLoop's do."""

    def add_reader(self, fd, callback, *args):
        raise NotImplementedError

    def remove_reader(self, fd):
        raise NotImplementedError


class NoReaderPolicy(asyncio.DefaultEventLoopPolicy):
    _loop_factory = NoReaderEventLoop


def policy(name):
    """The event loop policy for `--loop=name`."""
    if name == "uvloop":
        import uvloop

        return uvloop.EventLoopPolicy()
    if name == "noreader":
        return NoReaderPolicy()
    return asyncio.DefaultEventLoopPolicy()


NAMES = ["asyncio", "uvloop", "noreader"]
