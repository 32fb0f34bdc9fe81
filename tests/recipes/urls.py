from __future__ import annotations

from django.urls import path

from tests.recipes import views

urlpatterns = [
    path("backend/", views.backend),
    path("backend-async/", views.backend_async),
]
