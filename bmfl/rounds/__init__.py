"""The round core: every step of a BMFL round as plain functions over tensors and typed
records, with no transport, storage or chain (docs/architecture.md, "The round core").
The simulator's runner, the edge's round engine and the cloud's orchestrator call these
functions and add only HTTP, blob storage and chain calls around them."""

from bmfl.rounds.seeds import choose_attackers, select_trainers, vehicle_seed
from bmfl.rounds.stop import rounds_run, stop_reached

__all__ = ["choose_attackers", "rounds_run", "select_trainers", "stop_reached", "vehicle_seed"]
