"""``GET /stack`` fans out to every edge, so requests share one computation per TTL
(cloud_aggregator/stack_view.py StackCache): 50 concurrent requests cost one fan-out."""

from __future__ import annotations

import threading
import time

import cloud_aggregator.stack_view as sv


def test_concurrent_requests_share_one_computation_per_ttl(monkeypatch) -> None:
    calls = []

    def slow_view(cloud):
        calls.append(cloud)
        time.sleep(0.2)  # an edge that answers slowly
        return len(calls)

    monkeypatch.setattr(sv, "stack_view", slow_view)
    cache = sv.StackCache(ttl_s=0.5)
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("cloud"))) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got == [1] * 50
    time.sleep(0.6)
    assert cache.get("cloud") == 2  # recomputed once the TTL passed
