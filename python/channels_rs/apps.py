"""The optional Django app: ``"channels_rs"`` in INSTALLED_APPS registers
the CHANNEL_LAYERS system checks (``manage.py check``), and, with
prometheus_client installed, the layers' metrics."""

import importlib.util

from django.apps import AppConfig


class ChannelsRsConfig(AppConfig):
    name = "channels_rs"
    verbose_name = "channels-rs"

    def ready(self) -> None:
        from . import checks

        checks.register()
        if importlib.util.find_spec("prometheus_client"):
            from . import prometheus

            prometheus.register()
