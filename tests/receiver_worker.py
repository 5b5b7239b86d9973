"""One worker process of test_competing_receivers: TASKS receivers on one
normal channel, each in a task of its own as runworker runs consumers, every
job written to OUT as it arrives.

    python receiver_worker.py URL CHANNEL OUT TASKS [KILL_AFTER]

With KILL_AFTER, the process kills itself (SIGKILL) once it has written that
many jobs, after holding its loop for a moment: the other tasks' receives go
on popping jobs meanwhile that never reach them."""

import asyncio
import os
import signal
import sys
import time

from channels_rs import RedisChannelLayer


async def main(url, channel, out, tasks, kill_after=0):
    layer = RedisChannelLayer(hosts=[url])
    written = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    count = 0

    async def receiver():
        nonlocal count
        while True:
            message = await layer.receive(channel)
            os.write(written, f"{message['job']}\n".encode())
            count += 1
            if count == kill_after:
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGKILL)

    await asyncio.gather(*(receiver() for _ in range(tasks)))


if __name__ == "__main__":
    url, channel, out, *numbers = sys.argv[1:]
    asyncio.run(main(url, channel, out, *map(int, numbers)))
