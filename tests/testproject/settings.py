"""A small Django project that loads its channel layer the way users do:
through CHANNEL_LAYERS BACKEND."""

from channels_rs import layers_from_env

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = ["channels", "channels_rs", "testproject"]
ROOT_URLCONF = "testproject.urls"
ASGI_APPLICATION = "testproject.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True

# In-memory unless TESTPROJECT_REDIS_URL names a Redis server (the tests'
# own variable, so a developer's REDIS_URL never leaks in).
CHANNEL_LAYERS = layers_from_env(url_variable="TESTPROJECT_REDIS_URL")
