"""Test cases for Django's own test runner, run by tests/test_test_databases.py.

They prove that test databases created, cloned (--parallel) and kept (--keepdb)
through a pooled ENGINE work, and that the pool serves the test database.
"""

from __future__ import annotations

import os

from django.db import connection
from django.test import TestCase, TransactionTestCase

from django_sapool import _registry
from tests.testapp.models import Item


class PooledTestCase(TestCase):
    def test_writes_and_reads_in_the_test_database(self) -> None:
        Item.objects.create(name="one")
        assert Item.objects.count() == 1
        # The runner's test database (--parallel clones carry a suffix).
        expected = os.environ["SAPOOL_TEST_DB_NAME"]
        assert connection.settings_dict["NAME"].startswith(expected)
        assert any(pool.alias == "default" for pool in _registry.pools())


class PooledTransactionTestCase(TransactionTestCase):
    def test_connection_comes_back_between_uses(self) -> None:
        for name in ("a", "b", "c"):
            Item.objects.create(name=name)
            connection.close()
        assert Item.objects.count() == 3


class AnotherPooledTestCase(TestCase):
    def test_second_class_for_another_parallel_worker(self) -> None:
        Item.objects.create(name="two")
        assert list(Item.objects.values_list("name", flat=True)) == ["two"]
