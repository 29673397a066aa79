"""BMFL edge node (MEC server): vehicle association and handover, per-round trainer
selection committed on chain, verified uploads, filtering and robust aggregation, the
preliminary model and the round record on chain, and proof-of-testing-accuracy scores.
The HTTP contract is ``docs/protocol.md``."""
