"""BMFL core: the learning, privacy, robustness and incentive algorithms shared by the
simulator, the edge nodes, the cloud aggregator and the vehicle clients."""

__version__ = "0.1.0"
