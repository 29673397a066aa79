"""Under CI (``CI=true``), a test skipped for a missing tool (reason starting with
"missing tool:", see ``tests/tooling.py``) is reported as failed, whether the skip came
from a ``skipif`` mark, a fixture, ``pytest.skip`` or a module-level skip.

Files with a ``slow`` test are collected first (``make test`` hands files to its workers
in collection order, ``--dist loadfile --no-loadscope-reorder``): the long files start
while the many short ones are still queued to fill in after them, instead of being
handed out last, where one long file keeps one worker busy while the other idles.

A test marked ``no_cover`` runs its call without the coverage tracer, also in an xdist
worker, where pytest-cov's own pause leaves the test's thread traced."""

from __future__ import annotations

import sys

import pytest

from tooling import MISSING, in_ci


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _fail_missing_tool(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        reason = _skip_reason(report)
        if reason.startswith(MISSING):
            report.outcome = "failed"
            report.longrepr = f"{reason} [CI=true: a missing tool fails the run instead of skipping]"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    _fail_missing_tool(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    report = yield
    _fail_missing_tool(report)
    return report


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a ``slow`` test first, then the others by number of tests (xdist's own
    order); a file's tests stay together and in their order."""
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    slow: set[str] = set()
    for i, item in enumerate(items):
        path = item.nodeid.split("::", 1)[0]
        first.setdefault(path, i)
        count[path] = count.get(path, 0) + 1
        if item.get_closest_marker("slow"):
            slow.add(path)

    def key(item: pytest.Item) -> tuple[bool, int, int]:
        path = item.nodeid.split("::", 1)[0]
        return (path not in slow, -count[path], first[path])

    items.sort(key=key)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> object:
    """``no_cover``: no trace function in the test's thread during its call (innermost, so
    pytest-cov's pause and resume around it are unchanged)."""
    if item.get_closest_marker("no_cover") is None:
        return (yield)
    tracer = sys.gettrace()
    sys.settrace(None)
    try:
        return (yield)
    finally:
        sys.settrace(tracer)
