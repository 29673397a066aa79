"""What every BMFL service shares: chain and blob-store access from settings, errors as
problem bodies, ``/healthz`` and ``/metrics``, and a real uvicorn server in a thread."""
