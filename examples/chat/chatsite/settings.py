"""The chat site's settings. The channel layer comes from the environment:
the in-memory layer by default (one process, nothing to install), Redis when
REDIS_URL is set (several Daphne processes and background tasks share it)."""

import os

from channels_rs.settings import layers_from_env

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "chat-example-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["daphne", "channels", "chat"]
ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
TEMPLATES = [
    {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
]
# No models: who is connected is asked of the consumers themselves.
DATABASES = {}
USE_TZ = True

CHANNEL_LAYERS = layers_from_env()
