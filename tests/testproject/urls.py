from django.urls import path

import channels_rs.health

from . import views

urlpatterns = [
    path("broadcast/", views.broadcast),
    path("health/", channels_rs.health.view),
    path("health/<str:alias>/", channels_rs.health.view),
]
