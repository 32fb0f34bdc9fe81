"""The figures a fault scenario prints, for ``nox -s faults`` and the docs.

Each scenario prints one ``[fault]`` line (run pytest with ``-s`` to see
them): what it attempted, what succeeded and failed, what the server saw.
docs/reliability.md reports them.
"""

from __future__ import annotations


def figures(scenario: str, **counts: object) -> None:
    """Print ``[fault] scenario: name=value, ...``."""
    print(f"\n[fault] {scenario}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
