from __future__ import annotations

from catalog import views
from django.urls import path

urlpatterns = [
    path("", views.products, name="products"),
    path("product/<int:pk>/", views.product, name="product"),
    path("pool-stats/", views.pool_stats, name="pool-stats"),
]
