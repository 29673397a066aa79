"""``python -m cloud_aggregator``: serve the cloud from ``BMFL_CLOUD_*`` settings."""

from service_kit.logs import configure_logging, uvicorn_logging
from service_kit.serve import serve
from cloud_aggregator.app import create_app
from cloud_aggregator.settings import CloudSettings

if __name__ == "__main__":
    settings = CloudSettings()
    configure_logging("cloud", settings.log_format)
    serve(create_app(settings), settings.host, settings.port, log_level="warning", **uvicorn_logging(settings.log_format))
