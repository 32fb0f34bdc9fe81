from __future__ import annotations

from django.urls import path

from tests.recipes import views

urlpatterns = [
    path("backend/", views.backend),
    path("backend-async/", views.backend_async),
]

try:  # the Prometheus recipe (tests/test_prometheus_metrics.py)
    from django_sapool.prometheus import metrics_view
except ImportError:  # prometheus_client is not installed
    pass
else:
    urlpatterns.append(path("metrics/", metrics_view))
