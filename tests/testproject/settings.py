"""A small Django project that loads its channel layer the way users do:
through CHANNEL_LAYERS BACKEND. TESTPROJECT_LAYER picks another backend."""

import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = ["channels", "testproject"]
ROOT_URLCONF = "testproject.urls"
ASGI_APPLICATION = "testproject.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": os.environ.get(
            "TESTPROJECT_LAYER", "channels_rs.InMemoryChannelLayer"
        ),
    }
}
