from __future__ import annotations

from django.urls import path

from benchmarks.app import views

urlpatterns = [path("catalog/", views.catalog)]
