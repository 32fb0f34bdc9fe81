"""Optional app: add "django_sapool" to INSTALLED_APPS for checks and commands."""

from __future__ import annotations

from django.apps import AppConfig


class DjangoSAPoolConfig(AppConfig):
    """Registers the system checks; makes ``manage.py sapool_budget`` available."""

    name = "django_sapool"
    verbose_name = "django-sapool"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers on import)
