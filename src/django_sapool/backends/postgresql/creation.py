from __future__ import annotations

from django.db.backends.postgresql import creation

from django_sapool._creation import PoolDisposingCreationMixin


class DatabaseCreation(PoolDisposingCreationMixin, creation.DatabaseCreation):
    pass
