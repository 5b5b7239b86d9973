from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand

from testproject.consumers import GROUP


class Command(BaseCommand):
    help = "Send a text to every connected websocket, from a plain process."

    def add_arguments(self, parser):
        parser.add_argument("text")

    def handle(self, *args, text, **options):
        async_to_sync(get_channel_layer().group_send)(
            GROUP, {"type": "broadcast.message", "text": text}
        )
        self.stdout.write(f"sent {text!r}")
