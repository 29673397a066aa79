"""Words of the cloud's task view that its clients compare against, in a module that
imports nothing: ``bmfl task watch`` waits for :data:`SETTLED` without importing the
cloud's orchestrator (FastAPI, torch, web3: seconds of start-up for one string)."""

SETTLED = "every payee settled"
"""The ``detail`` of a finished task once every payee is credited."""
