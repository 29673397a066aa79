"""In-process simulation of BMFL rounds: the same core functions the services call,
without HTTP, chain or blob store."""

from bmfl.simulation.config import SimulationConfig, load_config
from bmfl.simulation.runner import RoundMetrics, SimulationResult, run_simulation

__all__ = ["SimulationConfig", "load_config", "RoundMetrics", "SimulationResult", "run_simulation"]
