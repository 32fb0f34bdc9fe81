"""A test runner for Django's own test suite that records every test's outcome.

Django's runtests.py honours settings.TEST_RUNNER; with --parallel, the workers'
results are replayed into the main process's result object, which records
them here and writes them as JSON to $SAPOOL_SUITE_RESULTS when the run ends.
"""

from __future__ import annotations

import json
import os
import unittest
from typing import Any

from django.test.runner import DiscoverRunner

# Worst outcome wins when a test reports several (subtests).
_RANK = {
    "ok": 0,
    "skipped": 1,
    "expected failure": 1,
    "unexpected success": 2,
    "failure": 3,
    "error": 4,
}


class RecordingResult(unittest.TextTestResult):
    outcomes: dict[str, str] = {}

    def _record(self, test: Any, outcome: str) -> None:
        name = test.id()
        if _RANK[outcome] >= _RANK.get(self.outcomes.get(name, "ok"), 0):
            self.outcomes[name] = outcome

    def addSuccess(self, test: Any) -> None:
        super().addSuccess(test)
        self.outcomes.setdefault(test.id(), "ok")

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._record(test, "failure")

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._record(test, "error")

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skipped")

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "expected failure")

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "unexpected success")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._record(test, "failure" if failed else "error")


class RecordingRunner(DiscoverRunner):
    def get_resultclass(self) -> Any:
        return RecordingResult

    def suite_result(self, suite: Any, result: Any, **kwargs: Any) -> int:
        path = os.environ.get("SAPOOL_SUITE_RESULTS")
        if path:
            with open(path, "w") as out:
                json.dump(RecordingResult.outcomes, out)
        return int(super().suite_result(suite, result, **kwargs))
