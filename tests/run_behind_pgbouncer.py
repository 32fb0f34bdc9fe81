"""``python -m tests.run_behind_pgbouncer``: see tests/support/behind_pgbouncer.py."""

from __future__ import annotations

import sys

from tests.support.behind_pgbouncer import main

if __name__ == "__main__":
    sys.exit(main())
