"""The test project as deployment tests run it (test_deployments.py): a
database in a file, as ChannelsLiveServerTestCase needs, static files, and
the layer TESTPROJECT_LAYER names on TESTPROJECT_REDIS_URL."""

import os

from .settings import *  # noqa: F403

INSTALLED_APPS = ["django.contrib.staticfiles", *INSTALLED_APPS]  # noqa: F405
STATIC_URL = "static/"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["TESTPROJECT_DATABASE"],
        # A file, not sqlite's in-memory default: the live server needs one.
        "TEST": {"NAME": os.environ["TESTPROJECT_DATABASE"] + "-test"},
    }
}
CHANNEL_LAYERS["default"]["BACKEND"] = os.environ.get(  # noqa: F405
    "TESTPROJECT_LAYER",
    CHANNEL_LAYERS["default"]["BACKEND"],  # noqa: F405
)
