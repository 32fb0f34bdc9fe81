"""Exceptions that stand for ones a test cannot raise for real.

Nothing here touches a server: tests/logic/ may import it.
"""

from __future__ import annotations


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt or SystemExit (raised by a signal handler,
    say): a BaseException, so that no ``except Exception`` catches it."""
