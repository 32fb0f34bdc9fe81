"""Fail fast while the server cannot be reached, and not a moment longer.

Without help, every checkout that needs a new connection while the server is
down tries to connect itself. Against a host that drops packets each attempt
waits the driver's ``connect_timeout``, and with all workers stuck connecting
the rest wait the pool's ``timeout``. A timed back-off fixes that but fails
requests for up to the back-off after the server is back.

The gate closes when a connect fails. While it is closed, one checkout at a
time tries to connect (the probe); the others wait for it, up to
``unreachable_wait`` seconds. A checkout fails with ServerUnavailable only on
evidence newer than itself: a connect attempt that began after the checkout
did and failed, or a probe still hanging when its wait is over. So a checkout
that starts once the server is back always gets to try, and the first connect
that succeeds opens the gate.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("django_sapool")


class Unreachable(Exception):
    """The gate's verdict: fail this checkout now (the message says why)."""


class ConnectGate:
    """Serialises connect attempts of one pool while connecting fails."""

    def __init__(self, alias: str, wait: float | None) -> None:
        self.alias = alias
        self.wait = wait
        self._changed = threading.Condition()
        #: When the newest failed attempt began (monotonic); 0: the gate is open.
        self._failed_at = 0.0
        self._error = ""
        self._probing = False

    def enter(self, checkout_started: float) -> bool:
        """Before a connect attempt: True if this one is the probe.

        Raises Unreachable instead when the server failed a connect begun
        after ``checkout_started``, or when the probe in flight outlasts the wait.
        """
        if not self._failed_at or self.wait is None:
            return False
        with self._changed:
            deadline = time.monotonic() + self.wait
            while self._failed_at:
                if self._failed_at >= checkout_started:
                    raise Unreachable(self._verdict("failed after this request began"))
                if not self._probing:
                    self._probing = True
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unreachable(
                        self._verdict(
                            f"another connect attempt is still trying after "
                            f"{self.wait:g} s (unreachable_wait)"
                        )
                    )
                self._changed.wait(remaining)
            return False

    def failed_since(self, started: float) -> bool:
        """Whether a connect attempt that began at or after ``started`` failed."""
        return self._failed_at >= started > 0 and self._failed_at > 0

    def no_connection_message(self) -> str:
        return self._verdict("failed while this request waited for a free connection")

    def succeeded(self, probe: bool) -> None:
        """A connect worked: the server is reachable, open the gate."""
        if not self._failed_at and not probe:
            return
        with self._changed:
            if self._failed_at:
                logger.info("Alias %r: connected again; the gate is open", self.alias)
            self._failed_at = 0.0
            self._probing = False
            self._changed.notify_all()

    def failed(self, probe: bool, attempt_started: float, error: BaseException) -> None:
        """A connect failed (or the probe was interrupted): close the gate."""
        with self._changed:
            if probe:
                self._probing = False
            if isinstance(error, Exception):
                if not self._failed_at:
                    logger.warning(
                        "Alias %r: connecting failed (%s: %s); until a connect "
                        "succeeds, one checkout at a time tries again",
                        self.alias,
                        type(error).__name__,
                        error,
                    )
                self._failed_at = max(self._failed_at, attempt_started)
                self._error = f"{type(error).__name__}: {error}".strip()
            self._changed.notify_all()

    def _verdict(self, why: str) -> str:
        return (
            f"Database alias {self.alias!r} is unreachable: a connect attempt "
            f"{why}; last error: {self._error}. The pool lets one checkout at a "
            "time try to connect until one succeeds."
        )
