from urllib.parse import urlencode

from django.shortcuts import redirect, render
from django.urls import reverse

from .names import user_name, valid_room


def index(request):
    return render(request, "chat/index.html", {"error": request.GET.get("error")})


def join(request):
    room = request.GET.get("room", "").strip()
    if not valid_room(room):
        problem = "A room name is 1 to 50 letters, digits, '-', '_' or '.'."
        return redirect(f"{reverse('index')}?{urlencode({'error': problem})}")
    name = user_name(request.GET.get("name", ""))
    return redirect(f"{reverse('room', args=[room])}?{urlencode({'name': name})}")


def room(request, room):
    name = user_name(request.GET.get("name", ""))
    return render(request, "chat/room.html", {"room": room, "name": name})


def live(request):
    return render(request, "chat/live.html")
