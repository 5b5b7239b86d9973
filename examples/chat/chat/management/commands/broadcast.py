"""`python manage.py broadcast TEXT`: an announcement to everyone in every
room, from a plain process with no event loop (as a Celery task or cron job
would send it). Across processes this needs a shared layer: set REDIS_URL."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand

from chat.consumers import MEMBERS, stamped


class Command(BaseCommand):
    help = "Send an announcement to every chat user, on every server."

    def add_arguments(self, parser):
        parser.add_argument("text")

    def handle(self, *args, text, **options):
        layer = get_channel_layer()
        event = stamped({"type": "chat.announcement", "text": text})
        async_to_sync(layer.group_send)(MEMBERS, event)
        self.stdout.write(f"announced through {type(layer).__name__}: {text}")
