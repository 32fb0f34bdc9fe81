"""The benchmarks' import path; the code is in tests/support/private_server.py."""

from __future__ import annotations

from tests.support.private_server import free_port, postgres_bindir

__all__ = ["free_port", "postgres_bindir"]
