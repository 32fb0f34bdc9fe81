"""Tables and charts of benchmark results."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

GROUP_TITLES = {
    "psycopg": "PostgreSQL, psycopg 3",
    "psycopg2": "PostgreSQL, psycopg2",
    "mysqlclient": "MariaDB, mysqlclient",
}


def machine(started: str, **run: Any) -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    packages = (
        "django",
        "sqlalchemy",
        "psycopg",
        "psycopg2-binary",
        "mysqlclient",
        "psycopg-pool",
        "django-db-connection-pool",
        "gunicorn",
    )
    return {
        "date": started,
        "machine": f"{os.cpu_count()} cores, {cpu}",
        "python": platform.python_version(),
        "packages": {name: installed(name) for name in packages},
        **run,
    }


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _head_to_head(value: float | None) -> str:
    # Three decimals: this comparison's own noise is well below 1%.
    return f"{value:.3f}x" if value is not None else "-"


def table(
    rows: list[dict[str, Any]], failed: dict[str, str], meta: dict[str, Any]
) -> str:
    lines = [
        f"Benchmark of {meta['date']} on {meta['machine']}, Python {meta['python']}; "
        f"each configuration driven in {meta['cycles']} bursts "
        f"of {meta['seconds']:g} s, "
        "interleaved with the others' (req/s: their mean and range; vs persistent "
        "and vs reconnect: the median, over cycles, of a burst's req/s over that "
        "cycle's burst of the other; head to head: the median, over "
        f"{meta.get('pairs', 0)} bursts, of its req/s over the persistent app's "
        "driven at the same time on the same CPUs); gunicorn gthread "
        f"{meta['workers']} workers x {meta['threads']} threads, wrk {meta['clients']} "
        f"keep-alive connections; pinning: {meta.get('pinning', 'none')}.",
        "",
        "| driver | configuration | req/s | (min-max) | vs persistent "
        "| head to head | vs reconnect "
        "| p50 ms | p99 ms | statements/req | connections/1000 req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        statements = row.get("statements_per_request")
        connections = row.get("connections_per_1000")
        lines.append(
            f"| {row['group']} | {row['label']} | {row['rps']:.0f} "
            f"| {row['rps_min']:.0f}-{row['rps_max']:.0f} "
            f"| {_ratio(row['vs_persistent'])} "
            f"| {_head_to_head(row.get('head_to_head'))} "
            f"| {_ratio(row['vs_reconnect'])} "
            f"| {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {'-' if statements is None else f'{statements:.2f}'} "
            f"| {'-' if connections is None else f'{connections:.0f}'} |"
        )
    for key, reason in failed.items():
        group, label = key.split("/", 1)
        lines.append(f"| {group} | {label} | did not run: {reason} |||||||||")
    versions = ", ".join(f"{k} {v}" for k, v in meta["packages"].items() if v != "-")
    lines += ["", f"Versions: {versions}."]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in GROUP_TITLES if any(r["group"] == g for r in rows)]
    if not groups:
        return
    height = max(len([r for r in rows if r["group"] == g]) for g in groups)
    figure, axes = plt.subplots(
        len(groups), 1, figsize=(9, 1.0 + 0.42 * height * len(groups)), squeeze=False
    )
    for axis, group in zip(axes[:, 0], groups, strict=True):
        mine = [r for r in rows if r["group"] == group]
        labels = [r["label"] for r in mine]
        values = [r["rps"] for r in mine]
        colors = [
            "#1f77b4" if r["label"].startswith("sapool") else "#b0b0b0" for r in mine
        ]
        bars = axis.barh(labels, values, color=colors)
        axis.invert_yaxis()
        axis.set_title(GROUP_TITLES[group], loc="left", fontsize=10)
        axis.set_xlabel("requests/s (higher is better)")
        for bar, row in zip(bars, mine, strict=True):
            axis.text(
                bar.get_width(),
                bar.get_y() + bar.get_height() / 2,
                f" {row['rps']:.0f}  ({_ratio(row['vs_persistent'])} of persistent)",
                va="center",
                fontsize=8,
            )
        axis.set_xlim(0, max(values) * 1.45)
    figure.suptitle(
        f"django-sapool benchmark, {meta['date']}, {meta['machine']}", fontsize=9
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    """Rebuild the table and the chart of a saved run: report.py RESULTS.json."""
    import json
    import sys

    path = Path(sys.argv[1])
    saved = json.loads(path.read_text())
    rows = saved["rows"]
    text = table(rows, saved["raw"]["failed"], saved["meta"])
    path.with_suffix(".md").write_text(text)
    chart(rows, saved["meta"], path.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    main()
