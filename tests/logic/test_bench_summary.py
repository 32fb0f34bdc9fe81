"""The benchmark compares each burst with the baseline's burst of the same cycle."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.cpu import summarize as cpu_summary
from benchmarks.run import paired_ratio, summarize


def bursts(*rps: float) -> list[dict[str, Any]]:
    return [
        {"rps": value, "p50_ms": 1.0, "p99_ms": 2.0, "cycle": cycle}
        for cycle, value in enumerate(rps)
    ]


def test_a_ratio_pairs_bursts_of_the_same_cycle() -> None:
    # The machine slowed down between cycles; within each, ours ran at 0.99x.
    persistent = bursts(1000, 500, 800)
    ours = bursts(990, 495, 792)
    assert paired_ratio(ours, persistent) == pytest.approx(0.99)
    # Unpaired means would have said 0.99 too here, but a skipped cycle must
    # not pair a burst with another cycle's.
    ours_missing_one = [b for b in ours if b["cycle"] != 1]
    assert paired_ratio(ours_missing_one, persistent) == pytest.approx(0.99)


def test_the_median_ignores_one_disturbed_cycle() -> None:
    persistent = bursts(1000, 1000, 1000, 1000, 1000)
    ours = bursts(990, 990, 400, 990, 990)  # one burst hit by a stall
    assert paired_ratio(ours, persistent) == pytest.approx(0.99)


def test_no_baseline_no_ratio() -> None:
    assert paired_ratio(bursts(1), None) is None
    assert paired_ratio(bursts(1), []) is None


def test_summary_rows() -> None:
    results = {
        "runs": {
            "psycopg/reconnect": bursts(100, 50),
            "psycopg/persistent": bursts(1000, 500),
            "psycopg/sapool": bursts(980, 500),
        },
        "counts": {"psycopg/sapool": {"statements_per_request": 3.0}},
        "failed": {},
    }
    rows = {row["label"]: row for row in summarize(results)}
    ours = rows["sapool"]
    assert ours["rps"] == 740  # the mean of its bursts
    assert (ours["rps_min"], ours["rps_max"]) == (500, 980)
    assert ours["vs_persistent"] == pytest.approx((0.98 + 1.0) / 2)
    assert ours["vs_reconnect"] == pytest.approx(9.9)
    assert ours["statements_per_request"] == 3.0
    assert rows["persistent"]["vs_persistent"] == 1.0


def test_head_to_head_is_the_median_of_its_simultaneous_bursts() -> None:
    results = {
        "runs": {
            "psycopg/persistent": bursts(1000),
            "psycopg/sapool": bursts(980),
        },
        "counts": {},
        "failed": {},
        # One pair where the scheduler starved the persistent app.
        "pairs": {"psycopg/sapool": [0.985, 1.54, 0.992]},
    }
    rows = {row["label"]: row for row in summarize(results)}
    assert rows["sapool"]["head_to_head"] == pytest.approx(0.992)
    assert rows["persistent"]["head_to_head"] is None


def test_cpu_ratios_pair_blocks_of_the_same_round() -> None:
    # The machine slowed down in the second round; ours cost 5% more in each.
    rows = cpu_summary(["persistent", "sapool"], [[800.0, 1600.0], [840.0, 1680.0]])
    assert [row["ratio"] for row in rows] == pytest.approx([1.0, 1.05])
    assert rows[1]["us"] == pytest.approx(1260.0)  # the median of its blocks
