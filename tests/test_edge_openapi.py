"""The edge's OpenAPI names every problem a client can get back: each reason code the
edge's code raises appears in the documented responses, on the routes that raise it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from service_fixtures import EdgeStack, edge_stack, service_chain  # noqa: F401

EDGE = Path(__file__).resolve().parent.parent / "edge_node"
RAISED = re.compile(r'ProblemError\(\s*\d{3},\s*"(\w+)"|"reason": "(\w+)"')


def _documented(operation: dict) -> set[str]:
    text = " ".join(r.get("description", "") for r in operation.get("responses", {}).values())
    return set(re.findall(r"`(\w+)`", text))


def test_every_reason_the_edge_raises_is_documented(edge_stack: EdgeStack) -> None:  # noqa: F811
    schema = httpx.get(edge_stack.url(0) + "/openapi.json").json()
    operations = [op for path in schema["paths"].values() for op in path.values()]
    documented = set().union(*(_documented(op) for op in operations))
    raised = {a or b for f in EDGE.rglob("*.py") for a, b in RAISED.findall(f.read_text())}
    assert raised and raised <= documented, f"undocumented: {sorted(raised - documented)}"
    rounds = schema["paths"]
    close = _documented(rounds["/tasks/{task_id}/rounds/{round}/close"]["post"])
    assert {"unknown_round", "wrong_phase", "chain_refused", "unsigned", "not_cloud"} <= close
    scores = _documented(rounds["/tasks/{task_id}/rounds/{round}/scores"]["post"])
    assert {"not_recorded", "preliminary_mismatch", "wrong_phase"} <= scores
    opened = _documented(rounds["/tasks/{task_id}/rounds/{round}/open"]["post"])
    assert {"global_mismatch", "wrong_phase"} <= opened
