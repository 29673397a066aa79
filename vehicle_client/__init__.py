"""Vehicle clients: one :class:`Vehicle` (key, data, DP training, signed uploads) and a
:class:`Fleet` driving many of them against real edges over HTTP."""

from vehicle_client.fleet import Fleet, FleetReport, UploadEvent
from vehicle_client.settings import FleetSettings
from vehicle_client.vehicle import BudgetExceeded, TrainedUpdate, Vehicle

__all__ = ["BudgetExceeded", "Fleet", "FleetReport", "FleetSettings", "TrainedUpdate", "UploadEvent", "Vehicle"]
