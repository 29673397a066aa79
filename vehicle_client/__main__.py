"""``python -m vehicle_client``: run a fleet from ``BMFL_FLEET_*`` settings until Ctrl-C."""

from __future__ import annotations

import signal
import threading

from vehicle_client.fleet import Fleet
from vehicle_client.settings import FleetSettings


def main() -> None:
    fleet = Fleet(FleetSettings())
    try:
        fleet.setup()
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        report = fleet.run(stop)
    finally:
        fleet.close()
    fleet.console.log(f"uploads {report.uploads}, refused (budget) {report.refused}, handovers {report.handovers}")


if __name__ == "__main__":
    main()
