"""``python -m channels_rs check [REDIS_URL]``: see channels_rs.check."""

import sys

from .check import main

COMMANDS = {"check": main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m channels_rs {{{','.join(COMMANDS)}}} [options]")
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
