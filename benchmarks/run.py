"""Side-by-side benchmark of Django connection strategies (``nox -s bench``).

A small Django view (three queries on a seeded table) is served by gunicorn
(gthread, 2 workers x 2 threads) on loopback and driven by wrk with 4
keep-alive connections. All configurations of a driver are served at once,
each by its own idle-until-driven gunicorn, and wrk drives them in turn with
short bursts, cycle after cycle, the order rotating: on a shared machine the
speed of the CPU itself drifts within seconds, so configurations are compared
burst against neighbouring burst, never one run of minutes against another.
A second, identical persistent app measures that comparison's own noise.
After the cycles, the pools and the second persistent app are each driven
head to head with the persistent app, both at once (see head_to_head()):
the more precise comparison of their cost per request. Before the cycles,
each configuration gets a counting pass: 1000 requests while the server
counts the statements (and pings) and the logins it receives.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.servers import MySQLServer, PostgreSQLCluster
from tests.support.private_server import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
COUNTING_REQUESTS = 1000
SECOND_PERSISTENT = "persistent, second app"
#: Also driven head to head with the persistent app (see head_to_head()).
HEAD_TO_HEAD = (SECOND_PERSISTENT, "django pool", "db-connection-pool", "sapool")


@dataclass(frozen=True)
class Layout:
    """How the app is served and loaded."""

    # Two processes of two threads each share their pools; on a 2-core machine
    # this gave the steadiest figures (about 9 % run-to-run spread).
    workers: int = 2
    threads: int = 2
    clients: int = 4  # wrk keep-alive connections


def cpu_split() -> tuple[str, str] | None:
    """CPUs for the app, and for the load generator and databases.

    Left to the scheduler, two gunicorn workers sometimes share one core for a
    whole run and halve its throughput; pinning removes that bimodal noise.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or not shutil.which("taskset"):
        return None
    half = len(cpus) // 2
    return ",".join(map(str, cpus[:half])), ",".join(map(str, cpus[half:]))


def pinned(command: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus else command


@dataclass(frozen=True)
class Config:
    """One way of connecting, as a DATABASES entry."""

    label: str
    vendor: str
    driver: str
    engine: str
    conn_max_age: int | None = 0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        return self.driver


def configurations() -> list[Config]:
    pg, my = "django.db.backends.postgresql", "django.db.backends.mysql"
    ours_pg, ours_my = (
        "django_sapool.backends.postgresql",
        "django_sapool.backends.mysql",
    )
    ddcp_pg, ddcp_my = (
        "dj_db_conn_pool.backends.postgresql",
        "dj_db_conn_pool.backends.mysql",
    )
    configs: list[Config] = []
    for driver, vendor, stock, ours, ddcp in (
        ("psycopg", "postgresql", pg, ours_pg, ddcp_pg),
        ("psycopg2", "postgresql", pg, ours_pg, ddcp_pg),
        ("mysqlclient", "mysql", my, ours_my, ddcp_my),
    ):
        configs += [
            Config("reconnect", vendor, driver, stock, 0),
            Config("persistent", vendor, driver, stock, None),
            # The same again: its ratio to the first is the measurement's noise.
            Config(SECOND_PERSISTENT, vendor, driver, stock, None),
        ]
        if driver == "psycopg":
            configs.append(
                Config("django pool", vendor, driver, stock, 0, {"pool": True})
            )
        configs += [
            Config("db-connection-pool", vendor, driver, ddcp, 0),
            Config("sapool", vendor, driver, ours, 0),
            Config(
                "sapool pre_ping",
                vendor,
                driver,
                ours,
                0,
                {"sapool": {"pre_ping": True}},
            ),
            Config(
                "sapool discard",
                vendor,
                driver,
                ours,
                0,
                {"sapool": {"reset_on_return": "discard"}},
            ),
        ]
    return configs


class Gunicorn:
    """The benchmark app under gunicorn, for one configuration."""

    def __init__(
        self, config: Config, database: dict[str, Any], layout: Layout, cpus: str | None
    ) -> None:
        self.port = free_port()
        settings = {
            **database,
            "ENGINE": config.engine,
            "CONN_MAX_AGE": config.conn_max_age,
            "OPTIONS": config.options,
        }
        env = {
            **os.environ,
            "SAPOOL_BENCH_DATABASE": json.dumps(settings),
            "SAPOOL_BENCH_DRIVER": config.driver,
            "DJANGO_SETTINGS_MODULE": "benchmarks.app.settings",
            "PYTHONPATH": str(ROOT),
        }
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "benchmarks.app.wsgi:application",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(layout.workers),
            "--threads",
            str(layout.threads),
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(
            pinned(command, cpus),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.port}/catalog/"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                _, errors = self.process.communicate()
                raise RuntimeError(f"{config.label}: gunicorn exited:\n{errors}")
            try:
                if get_status(self.port) == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{config.label}: gunicorn did not answer")

    def stop(self) -> str:
        self.process.terminate()
        try:
            _, errors = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, errors = self.process.communicate()
        return errors or ""


def get_status(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/catalog/")
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def drive(port: int, requests: int, clients: int = 4) -> int:
    """Send ``requests`` over ``clients`` keep-alive connections; return failures."""
    failures = [0] * clients

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(requests // clients):
            connection.request("GET", "/catalog/")
            response = connection.getresponse()
            response.read()
            failures[index] += response.status != 200
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(failures)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, seconds: int, clients: int, cpus: str | None) -> dict[str, Any]:
    return wrk_result(wrk_start(url, seconds, clients, cpus))


def wrk_start(
    url: str, seconds: int, clients: int, cpus: str | None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        pinned(["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency", url], cpus),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wrk_result(process: subprocess.Popen[str]) -> dict[str, Any]:
    """What a wrk run measured, once it has ended."""
    output, errors = process.communicate()
    if process.returncode:
        raise RuntimeError(f"wrk failed ({process.returncode}): {errors.strip()}")

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        assert match, output
        return float(match[1]) * _UNITS[match[2]]

    requests = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    assert requests, output
    assert rate, output
    return {
        "requests": int(requests[1]),
        "rps": float(rate[1]),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": int(bad[1]) if bad else 0,
        "socket_errors": socket_errors[1] if socket_errors else "",
    }


def head_to_head(
    base: Gunicorn,
    other: Gunicorn,
    seconds: int,
    clients: int,
    cpus: str | None,
    other_first: bool,
) -> float:
    """``other``'s req/s over ``base``'s, both driven at once.

    The two apps share the app CPUs, so whatever slows the machine during
    the burst slows both: their ratio is their cost per request compared,
    without the drift between bursts that sequential bursts carry. Bursts of
    one pair agree to about 0.5% (sequential ones differ by 5-10%), but each
    app carries an offset of its own, up to 3% (its processes' layout): the
    second persistent app's row shows it. The wrk started first alternates,
    in case starting first is an advantage.
    """
    order = (other, base) if other_first else (base, other)
    started = [wrk_start(app.url, seconds, clients, cpus) for app in order]
    try:
        bursts = [wrk_result(process) for process in started]
    finally:  # one failed: the other must not run on
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    for burst, app in zip(bursts, order, strict=True):
        check(burst, app)
    first, second = (burst["rps"] for burst in bursts)
    other_rps, base_rps = (first, second) if other_first else (second, first)
    return float(other_rps / base_rps)


def run(
    configs: list[Config], cycles: int, pairs: int, seconds: int, layout: Layout
) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    results: dict[str, Any] = {"runs": {}, "counts": {}, "failed": {}, "pairs": {}}
    split = cpu_split()
    load_cpus = split[1] if split else None
    affinities: dict[int, set[int]] = {}
    try:
        for vendor in sorted({c.vendor for c in configs}):
            server = PostgreSQLCluster() if vendor == "postgresql" else MySQLServer()
            print(f"starting {vendor} ...", flush=True)
            server.start()
            servers[vendor] = server
            if not server.rejects_wrong_password():
                raise SystemExit(f"{vendor}: logins are not password-checked")
            pid = server.pid()
            if load_cpus and pid:
                affinities[pid] = os.sched_getaffinity(pid)
                set_affinity(pid, load_cpus)
        for group in dict.fromkeys(c.group for c in configs):
            mine = [c for c in configs if c.group == group]
            server = servers[mine[0].vendor]
            run_group(mine, server, (cycles, pairs), seconds, layout, split, results)
    finally:
        for pid, cpus in affinities.items():
            set_affinity(pid, ",".join(map(str, sorted(cpus))), check=False)
        for server in servers.values():
            server.stop()
    return results


def run_group(
    configs: list[Config],
    server: Any,
    rounds: tuple[int, int],
    seconds: int,
    layout: Layout,
    split: tuple[str, str] | None,
    results: dict[str, Any],
) -> None:
    """Serve one driver's configurations at once and drive them in turn
    (``rounds``: cycles of bursts, then head-to-head bursts per contender)."""
    cycles, pairs = rounds
    app_cpus, load_cpus = split if split else (None, None)
    apps: dict[str, Gunicorn] = {}
    failed = results["failed"]
    try:
        for config in configs:
            key = f"{config.group}/{config.label}"
            print(f"{key}: starting, warming up, counting ...", end=" ", flush=True)
            try:
                app = Gunicorn(config, server.database_settings(), layout, app_cpus)
            except Exception as exc:  # one broken contender must not end the run
                print(f"FAILED: {fail(failed, key, exc)}")
                continue
            apps[key] = app
            try:
                # Warm-up: every worker thread has connected.
                check(wrk(app.url, 2, layout.clients, load_cpus), app)
                results["counts"][key] = count(app, server, layout)
            except Exception as exc:
                print(f"FAILED: {fail(failed, key, exc)}")
                continue
            print("ok", flush=True)
        keys = list(apps)
        for cycle in range(cycles):
            shift = cycle % len(keys)
            print(f"cycle {cycle + 1}/{cycles}:", end="", flush=True)
            for key in keys[shift:] + keys[:shift]:
                if key in failed:
                    continue
                try:
                    burst = check(
                        wrk(apps[key].url, seconds, layout.clients, load_cpus),
                        apps[key],
                    )
                except Exception as exc:
                    fail(failed, key, exc)
                    results["runs"].pop(key, None)
                    continue
                results["runs"].setdefault(key, []).append({**burst, "cycle": cycle})
                print(f" {key.split('/', 1)[1]} {burst['rps']:.0f}", end="", flush=True)
            print(flush=True)
        drive_pairs(apps, pairs, seconds, layout, load_cpus, results)
    finally:
        for key, app in apps.items():
            errors = app.stop()
            if key in failed and errors:
                failed[key] += f"; {errors.strip().splitlines()[-1][:200]}"


def drive_pairs(
    apps: dict[str, Gunicorn],
    pairs: int,
    seconds: int,
    layout: Layout,
    cpus: str | None,
    results: dict[str, Any],
) -> None:
    """Drive each HEAD_TO_HEAD configuration at once with the persistent app."""
    failed = results["failed"]
    base = next((k for k in apps if k.endswith("/persistent")), None)
    if base is None or base in failed:
        return
    contenders = [k for k in apps if k.split("/", 1)[1] in HEAD_TO_HEAD]
    for round_ in range(pairs):
        print(f"head to head {round_ + 1}/{pairs}:", end="", flush=True)
        for key in contenders:
            if key in failed:
                continue
            try:
                other_first = round_ % 2 == 1
                ratio = head_to_head(
                    apps[base], apps[key], seconds, layout.clients, cpus, other_first
                )
            except Exception as exc:
                fail(failed, key, exc)
                continue
            results["pairs"].setdefault(key, []).append(ratio)
            print(f" {key.split('/', 1)[1]} {ratio:.3f}", end="", flush=True)
        print(flush=True)


def fail(failed: dict[str, str], key: str, error: Exception) -> str:
    """Record why a configuration failed (the error's last line)."""
    failed[key] = str(error).splitlines()[-1][:300]
    return failed[key]


def set_affinity(pid: int, cpus: str, *, check: bool = True) -> None:
    """Pin a server process and all its threads (taskset -a)."""
    subprocess.run(
        ["taskset", "-a", "-p", "-c", cpus, str(pid)], check=check, capture_output=True
    )


def check(measured: dict[str, Any], app: Gunicorn) -> dict[str, Any]:
    """A burst with failed requests fails its configuration."""
    if measured["errors"] or measured["socket_errors"]:
        failed, sockets = measured["errors"], measured["socket_errors"]
        raise RuntimeError(f"{failed} failed requests ({sockets})")
    return measured


def count(app: Gunicorn, server: Any, layout: Layout) -> dict[str, float]:
    """Statements and logins the server saw for COUNTING_REQUESTS requests."""
    server.set_statement_logging(True)
    try:
        offset = server.log_offset()
        failures = drive(app.port, COUNTING_REQUESTS, layout.threads)
        seen = server.counts_since(offset)
    finally:
        server.set_statement_logging(False)
    return {
        "statements_per_request": seen.statements / COUNTING_REQUESTS,
        "connections_per_1000": seen.connections * 1000 / COUNTING_REQUESTS,
        "failures": failures,
    }


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per configuration: mean req/s over its bursts, and its ratios to the
    persistent and reconnecting apps as the median of burst-to-burst ratios
    within each cycle (the bursts compared ran seconds apart)."""
    runs: dict[str, list[dict[str, Any]]] = results["runs"]
    rows = []
    for key, bursts in runs.items():
        group, label = key.split("/", 1)
        rows.append(
            {
                "group": group,
                "label": label,
                "bursts": len(bursts),
                "rps": statistics.mean(b["rps"] for b in bursts),
                "rps_min": min(b["rps"] for b in bursts),
                "rps_max": max(b["rps"] for b in bursts),
                "p50_ms": statistics.median(b["p50_ms"] for b in bursts),
                "p99_ms": statistics.median(b["p99_ms"] for b in bursts),
                **results["counts"].get(key, {}),
                "vs_persistent": paired_ratio(bursts, runs.get(f"{group}/persistent")),
                "vs_reconnect": paired_ratio(bursts, runs.get(f"{group}/reconnect")),
                "head_to_head": _median(results.get("pairs", {}).get(key)),
            }
        )
    return rows


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def paired_ratio(
    bursts: list[dict[str, Any]], baseline: list[dict[str, Any]] | None
) -> float | None:
    """Median over cycles of a burst's req/s over the baseline's in that cycle."""
    if not baseline:
        return None
    base = {b["cycle"]: b["rps"] for b in baseline}
    ratios = [b["rps"] / base[b["cycle"]] for b in bursts if base.get(b["cycle"])]
    return statistics.median(ratios) if ratios else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cycles", type=int, default=12, help="bursts per configuration"
    )
    parser.add_argument(
        "--pairs", type=int, default=8, help="head-to-head bursts per contender"
    )
    parser.add_argument("--seconds", type=int, default=3, help="length of a burst")
    parser.add_argument(
        "--only", default="", help="comma-separated driver groups or labels"
    )
    parser.add_argument("--workers", type=int, default=Layout.workers)
    parser.add_argument("--threads", type=int, default=Layout.threads)
    parser.add_argument("--clients", type=int, default=Layout.clients)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("benchmark: wrk is needed (Debian: apt-get install wrk)")
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    configs = [
        c
        for c in configurations()
        if not wanted or c.group in wanted or c.label in wanted
    ]
    started = time.strftime("%Y-%m-%d %H:%M")
    layout = Layout(args.workers, args.threads, args.clients)
    results = run(configs, args.cycles, args.pairs, args.seconds, layout)
    rows = summarize(results)
    split = cpu_split()
    meta = report.machine(
        started,
        cycles=args.cycles,
        pairs=args.pairs,
        seconds=args.seconds,
        **asdict(layout),
        pinning=f"app on CPUs {split[0]}, wrk and databases on {split[1]}"
        if split
        else "none",
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "rows": rows,
                "raw": results,
                "configs": [asdict(c) for c in configs],
            },
            indent=2,
        )
    )
    table = report.table(rows, results["failed"], meta)
    (RESULTS / "latest.md").write_text(table)
    report.chart(rows, meta, RESULTS / "latest.png")
    print()
    print(table)
    print(f"written: {RESULTS}/latest.{{json,md,png}}")


if __name__ == "__main__":
    main()
