"""Under CI (``CI=true``), a test skipped for a missing tool (reason starting with
"missing tool:", see ``tests/tooling.py``) is reported as failed, whether the skip came
from a ``skipif`` mark, a fixture, ``pytest.skip`` or a module-level skip."""

from __future__ import annotations

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
