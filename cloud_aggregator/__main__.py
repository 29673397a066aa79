"""``python -m cloud_aggregator``: serve the cloud from ``BMFL_CLOUD_*`` settings."""

import logging

import uvicorn

from cloud_aggregator.app import create_app
from cloud_aggregator.settings import CloudSettings

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = CloudSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
