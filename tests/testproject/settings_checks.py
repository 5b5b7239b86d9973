"""testproject's settings with CHANNEL_LAYERS read from the JSON in
TESTPROJECT_CHANNEL_LAYERS: how the check tests hand `manage.py check`
each configuration."""

import json
import os

from .settings import *  # noqa: F403

CHANNEL_LAYERS = json.loads(os.environ["TESTPROJECT_CHANNEL_LAYERS"])
