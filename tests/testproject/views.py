from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpResponse

from .consumers import GROUP


def broadcast(request):
    """A plain sync view telling every connected socket something."""
    text = request.GET.get("text", "")
    async_to_sync(get_channel_layer().group_send)(
        GROUP, {"type": "broadcast.message", "text": text}
    )
    return HttpResponse("sent")
