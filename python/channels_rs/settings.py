"""Build CHANNEL_LAYERS from the environment, the way most deployments do by
hand: Redis when a URL is set, the in-memory layer otherwise."""

import os


def layers_from_env(
    environ=None,
    *,
    url_variable="REDIS_URL",
    keys_variable="CHANNEL_LAYERS_ENCRYPTION_KEYS",
    **config,
):
    """A CHANNEL_LAYERS dict for settings.py::

        from channels_rs.settings import layers_from_env
        CHANNEL_LAYERS = layers_from_env()

    ``REDIS_URL`` set: ``channels_rs.RedisChannelLayer`` on it (several URLs
    separated by commas shard over those servers). Unset or empty:
    ``channels_rs.InMemoryChannelLayer``. ``CHANNEL_LAYERS_ENCRYPTION_KEYS``,
    if set, is a comma-separated list of keys for Redis (the first encrypts,
    all decrypt); the in-memory layer ignores it, as its messages never leave
    the process. Other keyword arguments go into CONFIG as they are.
    """
    environ = os.environ if environ is None else environ
    urls = [url.strip() for url in environ.get(url_variable, "").split(",")]
    urls = [url for url in urls if url]
    if not urls:
        layer = {"BACKEND": "channels_rs.InMemoryChannelLayer"}
        return {"default": {**layer, "CONFIG": config} if config else layer}
    config = {"hosts": urls, **config}
    keys = [key.strip() for key in environ.get(keys_variable, "").split(",")]
    keys = [key for key in keys if key]
    if keys:
        config["symmetric_encryption_keys"] = keys
    return {"default": {"BACKEND": "channels_rs.RedisChannelLayer", "CONFIG": config}}
