from django.urls import path

from chat import views

urlpatterns = [
    path("", views.index, name="index"),
    path("join/", views.join, name="join"),
    path("rooms/<room:room>/", views.room, name="room"),
    path("live/", views.live, name="live"),
]
