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

Signals (Celery's soft time limit, SIGINT) raise from the first Python call
after a blocking connect in psycopg2 or mysqlclient returns, so the probe's
slot is freed by a plain store in the frame that ran the connect, before any
call (a context manager's ``__exit__`` would be too late: the handler raises
on entering it). A probe that still holds its slot after ``probe_limit``
seconds is taken over by a waiting checkout, whatever became of it. The
gate's own lock is a plain Lock, whose ``with`` exit no signal can skip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ._events import log_fields

logger = logging.getLogger("django_sapool")

_T = TypeVar("_T")
#: Waiters look again this often in case a wake-up was lost to a signal.
LOOK_AGAIN_SECONDS = 0.25
#: The default connect_timeout (10 s) plus a margin; _pool.py passes its own.
DEFAULT_PROBE_LIMIT = 11.0
_WHAT_THE_POOL_DOES = (
    "until a connect succeeds, the pool lets one checkout at a time try to connect"
)


class Unreachable(Exception):
    """The gate's verdict: fail this checkout now (the message says why)."""


class ConnectGate:
    """Serialises connect attempts of one pool while connecting fails."""

    def __init__(
        self,
        alias: str,
        wait: float | None,
        probe_limit: float = DEFAULT_PROBE_LIMIT,
    ) -> None:
        """``wait``: unreachable_wait (None: no gate); ``probe_limit``: after
        this many seconds a probe is presumed lost (connect_timeout + margin)."""
        self.alias = alias
        self.wait = wait
        self.probe_limit = probe_limit
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)
        #: When the newest failed attempt began (monotonic); 0: the gate is open.
        self._failed_at = 0.0
        #: When the newest successful attempt began: older failures are stale.
        self._succeeded_at = 0.0
        self._error = ""
        #: The probe in flight (its token) and when it took the slot.
        self._probe: object | None = None
        self._probe_since = 0.0
        self._probe_thread = 0

    def is_closed(self) -> bool:
        """True from a failed connect until one succeeds (never without a wait)."""
        return bool(self._failed_at) and self.wait is not None

    def run(self, checkout_started: float, connect: Callable[[], _T]) -> _T:
        """Make one connect attempt through the gate: ``connect()``'s result.

        Raises Unreachable instead of connecting when a connect begun after
        ``checkout_started`` failed, or when the probe in flight outlasts the
        wait. Records the outcome, and frees the probe slot whatever happens.
        """
        token = object()
        started = 0.0
        try:
            if self._failed_at and self.wait is not None:
                self._take_turn(checkout_started, token)
            started = time.monotonic()
            connection = connect()
        except BaseException as error:
            # Stores only until the slot is free: no call a signal could end.
            probe = self._probe is token
            if probe:
                self._probe = None
            self._ended(started, probe, error)
            raise
        probe = self._probe is token
        if probe:
            self._probe = None
        self._ended(started, probe, None)
        return connection

    def no_idle_message(self, waited: float) -> str:
        """ServerUnavailable's message: no idle connection came free while
        connects are failing (the checkout waited ``waited`` seconds)."""
        return self._verdict(
            f"no idle connection came free while this checkout waited "
            f"{waited:.2f} s (unreachable_wait={_seconds(self.wait)}) and the "
            f"last connect attempt failed ({self._error or 'no error recorded'}), "
            f"so the checkout fails"
        )

    def failed_since(self, started: float) -> bool:
        """Whether a connect attempt that began at or after ``started`` failed."""
        return self.wait is not None and self._failed_at >= started

    # Internals ---------------------------------------------------------------

    def _take_turn(self, checkout_started: float, token: object) -> None:
        """Wait while another checkout probes; become the probe if need be."""
        wait = self.wait
        assert wait is not None
        lost_for = 0.0
        with self._mutex:
            deadline = time.monotonic() + wait
            while self._failed_at:
                if self._failed_at >= checkout_started:
                    raise Unreachable(self._verdict_failed())
                now = time.monotonic()
                lost_for = now - self._probe_since if self._probe is not None else 0
                if (
                    self._probe is None
                    or lost_for >= self.probe_limit
                    # This thread's own earlier probe is over, even if a signal
                    # (Python 3.10 runs handlers between any two bytecodes)
                    # kept it from freeing the slot: a thread connects once.
                    or self._probe_thread == threading.get_ident()
                ):
                    self._probe, self._probe_since = token, now
                    self._probe_thread = threading.get_ident()
                    break
                remaining = deadline - now
                if remaining <= 0:
                    raise Unreachable(self._verdict_waited())
                self._changed.wait(
                    min(
                        remaining,
                        self._probe_since + self.probe_limit - now,
                        LOOK_AGAIN_SECONDS,
                    )
                )
        if lost_for >= self.probe_limit:
            logger.warning(
                "Alias %r: the connect attempt in flight has held the probe "
                "for %.1f s (more than %g s); another checkout tries instead",
                self.alias,
                lost_for,
                self.probe_limit,
            )

    def _ended(self, started: float, probe: bool, error: BaseException | None) -> None:
        """Record an attempt's outcome (``started`` 0: it never began)."""
        if not probe and (not started or (error is None and not self._failed_at)):
            return  # nothing to record (the usual case: open and staying open)
        opened = closed = False
        with self._mutex:
            if started and error is None:
                self._succeeded_at = max(self._succeeded_at, started)
                opened = bool(self._failed_at)
                self._failed_at = 0.0
            elif (
                started
                and isinstance(error, Exception)  # not an interruption
                and started > self._succeeded_at  # newer than the last success
            ):
                closed = not self._failed_at
                self._failed_at = max(self._failed_at, started)
                self._error = _describe(error)
            self._changed.notify_all()
        if opened:
            logger.info(
                "Alias %r: connected again; the gate is open",
                self.alias,
                extra=log_fields("connect_recovered", self.alias),
            )
        if closed:
            logger.warning(
                "Alias %r: connecting failed (%s); until a connect succeeds, "
                "one checkout at a time tries again",
                self.alias,
                self._error,
                extra=log_fields("connect_failing", self.alias, error=self._error),
            )

    def _verdict_failed(self) -> str:
        return self._verdict(
            f"a connect attempt that began after this checkout failed "
            f"({self._error}), so the checkout fails at once"
        )

    def _verdict_waited(self) -> str:
        return self._verdict(
            f"another checkout's connect attempt was still running after this "
            f"checkout had waited {_seconds(self.wait)} s for it (unreachable_wait) "
            f"and the last attempt failed ({self._error}), so the checkout fails"
        )

    def _verdict(self, what: str) -> str:
        return (
            f"Database alias {self.alias!r} is unreachable: {what}; "
            f"{_WHAT_THE_POOL_DOES}."
        )


def _seconds(value: float | None) -> str:
    return "None" if value is None else f"{value:g}"


def _describe(error: BaseException) -> str:
    """The error's type and message on one line (drivers' span several)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
