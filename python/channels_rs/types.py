"""The types the layers' public methods take and return, for annotations."""

from collections.abc import Sequence
from typing import Any

#: An ASGI message: a dict with at least a "type" key.
Message = dict[str, Any]
#: One ``hosts`` entry, in any form channels_redis accepts: a URL, a
#: (host, port) pair, or a dict of redis-py style options.
HostEntry = str | tuple[str, int] | dict[str, Any]
Hosts = Sequence[HostEntry]
