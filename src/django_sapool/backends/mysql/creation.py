from __future__ import annotations

from django.db.backends.mysql import creation

from django_sapool._creation import PoolDisposingCreationMixin


class DatabaseCreation(PoolDisposingCreationMixin, creation.DatabaseCreation):
    pass
