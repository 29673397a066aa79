"""In-process simulation of BMFL rounds: the same core functions the services call,
without HTTP, chain or blob store.

Names load on first use, so the CLI starts without importing torch.
"""

from importlib import import_module

_EXPORTS = {
    "SimulationConfig": "bmfl.simulation.config",
    "load_config": "bmfl.simulation.config",
    "RoundMetrics": "bmfl.simulation.runner",
    "SimulationResult": "bmfl.simulation.runner",
    "run_simulation": "bmfl.simulation.runner",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bmfl.simulation' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
