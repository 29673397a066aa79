"""Readiness probes shared by the local launcher (``bmfl up`` / ``bmfl status``) and the
compose health checks (``python -m launcher.health http://127.0.0.1:8000``).

A probe returns what it learnt as a dict, or raises :class:`NotReady`.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable


class NotReady(Exception):
    """The endpoint does not answer, or not yet as expected."""


def _get(url: str, timeout: float, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers or {}), timeout=timeout) as reply:
            return reply.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise NotReady(f"{url}: {exc}") from None


def _json(url: str, timeout: float, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    body = _get(url, timeout, data, headers)
    try:
        return json.loads(body)
    except ValueError:
        raise NotReady(f"{url}: not JSON: {body[:100]!r}") from None


def service_health(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """A BMFL service's ``GET /healthz`` body."""
    return _json(url.rstrip("/") + "/healthz", timeout)


def chain_health(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """Chain id and latest block of a JSON-RPC node."""
    answers = []
    for method in ("eth_chainId", "eth_blockNumber"):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}).encode()
        reply = _json(url, timeout, body, {"Content-Type": "application/json"})
        if "result" not in reply:
            raise NotReady(f"{url} {method}: {reply.get('error')}")
        answers.append(int(reply["result"], 16))
    return {"chain_id": answers[0], "block": answers[1]}


def associated_vehicles(edge_url: str, timeout: float = 3.0) -> int:
    """Associations an edge accepted since it started (its ``/metrics``)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = _get(edge_url.rstrip("/") + "/metrics", timeout).decode()
    return int(sum(
        sample.value for family in text_string_to_metric_families(text) for sample in family.samples
        if sample.name == "bmfl_edge_associations_total" and sample.labels.get("outcome") == "associated"
    ))  # fmt: skip


def fleet_health(cloud_url: str, vehicles: int, timeout: float = 3.0) -> dict[str, Any]:
    """Ready once the edges in the cloud's directory have associated ``vehicles`` vehicles."""
    edges = _json(cloud_url.rstrip("/") + "/edges", timeout)
    associated = sum(associated_vehicles(edge["url"], timeout) for edge in edges)
    if associated < vehicles:
        raise NotReady(f"{associated}/{vehicles} vehicles associated")
    return {"associated": associated, "vehicles": vehicles}


def blob_store_health(spec: str, timeout: float = 3.0) -> dict[str, Any]:
    """A Kubo daemon's version, or a local store directory's blob count."""
    if spec.startswith("kubo:"):
        api = spec.removeprefix("kubo:").rstrip("/")
        return {"kubo": _json(api + "/api/v0/version", timeout, b"")["Version"], "api": api}
    folder = Path(spec)
    if not folder.is_dir():
        raise NotReady(f"{folder} is not a directory")
    return {"directory": str(folder.resolve()), "files": sum(1 for p in folder.rglob("*") if p.is_file())}


PROBES: dict[str, Callable[..., dict[str, Any]]] = {"service": service_health, "chain": chain_health, "fleet": fleet_health}
"""Probes by the name a service's state record gives."""


def main(argv: list[str]) -> int:
    """``python -m launcher.health URL``: exit 0 when the service at URL is healthy."""
    try:
        print(json.dumps(service_health(argv[0])))
    except NotReady as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
