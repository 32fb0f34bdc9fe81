"""The connect gate's state machine, without a server.

Connects are fakes: a function that fails (the driver's OperationalError), one
that is interrupted (KeyboardInterrupt, or what a signal handler raises), one
that hangs until the test lets it go. The gate never sees a connection, only
whether ``connect()`` returned or raised.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from django_sapool._gate import ConnectGate, Unreachable
from tests.support.stand_ins import Interrupted
from tests.support.waiting import wait_until


class ConnectFailed(Exception):
    """Stands for the driver's OperationalError."""


REFUSED = "connection refused\n\tIs the server running on that host?\n"
REFUSED_ONE_LINE = (
    "ConnectFailed: connection refused Is the server running on that host?"
)


def refuse() -> str:
    raise ConnectFailed(REFUSED)


def connected() -> str:
    return "connection"


def close(gate: ConnectGate) -> None:
    """A failed connect closes the gate."""
    with pytest.raises(ConnectFailed):
        gate.run(time.monotonic(), refuse)
    assert gate.is_closed()


class Hanging:
    """A connect that hangs until released, then fails or succeeds."""

    def __init__(self, outcome: Callable[[], str] = refuse) -> None:
        self.began = threading.Event()
        self.release = threading.Event()
        self.outcome = outcome

    def __call__(self) -> str:
        self.began.set()
        assert self.release.wait(30)
        return self.outcome()


@pytest.fixture
def in_background() -> Iterator[Callable[[Callable[[], object]], threading.Thread]]:
    """Start a function in a thread; the test waits for it at the end."""
    threads: list[threading.Thread] = []

    def start(function: Callable[[], object]) -> threading.Thread:
        def run() -> None:
            with contextlib.suppress(Exception, Interrupted):
                function()

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)
        return thread

    yield start
    for thread in threads:
        thread.join(30)


def test_the_gate_closes_on_a_failed_connect_and_opens_on_a_successful_one() -> None:
    gate = ConnectGate("gated", wait=1.0)
    assert not gate.is_closed()
    assert gate.run(time.monotonic(), connected) == "connection"
    close(gate)
    assert gate.run(time.monotonic(), connected) == "connection"
    assert not gate.is_closed()


def test_without_unreachable_wait_there_is_no_gate() -> None:
    gate = ConnectGate("ungated", wait=None)
    checkout_started = time.monotonic()
    with pytest.raises(ConnectFailed):
        gate.run(time.monotonic(), refuse)
    assert not gate.is_closed()
    # Newer evidence, but every checkout tries for itself.
    assert gate.run(checkout_started, connected) == "connection"


def test_a_checkout_fails_at_once_on_a_connect_failure_newer_than_itself() -> None:
    gate = ConnectGate("newer", wait=5.0)
    checkout_started = time.monotonic()
    close(gate)  # an attempt that began after the checkout did
    tried: list[bool] = []

    def connect() -> str:
        tried.append(True)
        return "connection"

    started = time.monotonic()
    with pytest.raises(Unreachable) as verdict:
        gate.run(checkout_started, connect)
    assert time.monotonic() - started < 0.5
    assert tried == []
    assert str(verdict.value) == (
        "Database alias 'newer' is unreachable: a connect attempt that began "
        f"after this checkout failed ({REFUSED_ONE_LINE}), so the checkout fails "
        "at once; until a connect succeeds, the pool lets one checkout at a time "
        "try to connect."
    )


def test_a_checkout_newer_than_the_failure_tries_to_connect() -> None:
    gate = ConnectGate("older", wait=5.0)
    close(gate)
    assert gate.run(time.monotonic(), connected) == "connection"
    assert not gate.is_closed()


def test_waiters_fail_once_the_probe_outlasts_unreachable_wait(
    in_background: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    gate = ConnectGate("hanging", wait=0.3, probe_limit=60)
    close(gate)
    probe = Hanging()
    in_background(lambda: gate.run(time.monotonic(), probe))
    assert probe.began.wait(5)
    started = time.monotonic()
    try:
        with pytest.raises(Unreachable) as verdict:
            gate.run(time.monotonic(), connected)
        waited = time.monotonic() - started
    finally:
        probe.release.set()
    assert 0.3 <= waited < 1.0
    assert str(verdict.value) == (
        "Database alias 'hanging' is unreachable: another checkout's connect "
        "attempt was still running after this checkout had waited 0.3 s for it "
        f"(unreachable_wait) and the last attempt failed ({REFUSED_ONE_LINE}), "
        "so the checkout fails; until a connect succeeds, the pool lets one "
        "checkout at a time try to connect."
    )


def test_the_message_for_no_idle_connection_while_connects_fail() -> None:
    gate = ConnectGate("exhausted", wait=2.0)
    close(gate)
    assert gate.no_idle_message(1.999) == (
        "Database alias 'exhausted' is unreachable: no idle connection came free "
        "while this checkout waited 2.00 s (unreachable_wait=2) and the last "
        f"connect attempt failed ({REFUSED_ONE_LINE}), so the checkout fails; "
        "until a connect succeeds, the pool lets one checkout at a time try to "
        "connect."
    )


def test_an_error_without_a_message_is_named_by_its_type() -> None:
    gate = ConnectGate("terse", wait=2.0)

    def time_out() -> str:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        gate.run(time.monotonic(), time_out)
    assert "the last connect attempt failed (TimeoutError), so" in (
        gate.no_idle_message(2)
    )


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, Interrupted])
def test_a_probe_interrupted_by_a_base_exception_frees_its_slot_at_once(
    interruption: type[BaseException],
) -> None:
    """Celery's soft time limit, SIGINT: the probe's connect raises something
    that is no connect failure. The next checkout must get to try, at once,
    and the interruption is no evidence against checkouts older than it."""
    gate = ConnectGate("interrupted", wait=5.0, probe_limit=60)
    close(gate)
    checkout_started = time.monotonic()  # before the interrupted attempt

    def interrupted() -> str:
        raise interruption

    with pytest.raises(interruption):
        gate.run(time.monotonic(), interrupted)  # the probe
    assert gate.is_closed()
    started = time.monotonic()
    assert gate.run(checkout_started, connected) == "connection"
    assert time.monotonic() - started < 0.2  # no wait for a lost probe
    assert not gate.is_closed()


def test_a_probe_that_outlives_probe_limit_is_taken_over(
    in_background: Callable[[Callable[[], object]], threading.Thread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A probe that never reports back (hung beyond its connect_timeout, or
    its thread lost before it could) holds the slot only for probe_limit."""
    gate = ConnectGate("taken-over", wait=2.0, probe_limit=0.3)
    close(gate)
    lost = Hanging()
    in_background(lambda: gate.run(time.monotonic(), lost))
    assert lost.began.wait(5)
    started = time.monotonic()
    try:
        assert gate.run(time.monotonic(), connected) == "connection"
        waited = time.monotonic() - started
        assert not gate.is_closed()
    finally:
        lost.release.set()  # it fails now, too late to count
    assert 0.25 <= waited < 1.0
    assert any("another checkout tries instead" in m for m in caplog.messages)
    time.sleep(0.1)
    assert not gate.is_closed()  # its failure is older than the success


def test_one_checkout_at_a_time_tries_while_connects_fail(
    in_background: Callable[[Callable[[], object]], threading.Thread],
) -> None:
    gate = ConnectGate("one-at-a-time", wait=2.0, probe_limit=60)
    close(gate)
    lock = threading.Lock()
    trying = most = attempts = 0
    start = threading.Barrier(8)

    def slow_refusal() -> str:
        nonlocal trying, most, attempts
        with lock:
            trying += 1
            attempts += 1
            most = max(most, trying)
        time.sleep(0.05)
        with lock:
            trying -= 1
        return refuse()

    def checkout() -> None:
        start.wait(5)
        gate.run(time.monotonic(), slow_refusal)

    threads = [in_background(checkout) for _ in range(8)]
    for thread in threads:
        thread.join(30)
    assert most == 1
    assert 1 <= attempts < 8  # the others failed on the newer evidence
    assert gate.is_closed()


def test_a_signal_raising_in_a_waiter_leaves_the_gate_working(
    in_background: Callable[[Callable[[], object]], threading.Thread],
    interrupt_after: Callable[[float], None],
) -> None:
    """A signal handler raises while a checkout waits for the probe: the
    waiter leaves, the gate's lock is free, and the probe's outcome counts."""
    gate = ConnectGate("impatient", wait=5.0, probe_limit=60)
    close(gate)
    probe = Hanging(outcome=connected)
    in_background(lambda: gate.run(time.monotonic(), probe))
    assert probe.began.wait(5)
    interrupt_after(0.1)
    try:
        with pytest.raises(Interrupted):
            gate.run(time.monotonic(), connected)
    finally:
        probe.release.set()
    # The probe connected: it opens the gate.
    wait_until(lambda: not gate.is_closed(), "the gate opens", interval=0.01)
    assert gate.run(time.monotonic(), connected) == "connection"


@pytest.fixture
def interrupt_after() -> Iterator[Callable[[float], None]]:
    """Raise Interrupted in the test's thread from a SIGALRM handler."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    def arm(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    previous = signal.signal(signal.SIGALRM, handler)
    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_a_threads_own_stranded_probe_never_blocks_its_next_attempt() -> None:
    # On Python 3.10 a signal handler can raise between any two bytecodes,
    # even before the gate frees the probe slot: the slot stays taken. The
    # same thread's next attempt proves that probe is over, so it goes ahead
    # at once rather than after probe_limit.
    gate = ConnectGate("x", wait=0.3, probe_limit=30)
    close(gate)
    gate._take_turn(time.monotonic(), object())  # a probe that never ended
    started = time.monotonic()
    assert gate.run(time.monotonic(), connected) == "connection"
    assert time.monotonic() - started < 0.2
    assert not gate.is_closed()
