"""Django's mysql backend must import (its driver installed) before ours."""

from __future__ import annotations

from django_sapool.backends import import_django_backend

import_django_backend("mysql")
