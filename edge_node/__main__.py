"""``python -m edge_node``: serve the edge configured by ``BMFL_EDGE_*`` variables."""

from __future__ import annotations

from service_kit.logs import configure_logging, uvicorn_logging
from service_kit.serve import serve
from edge_node.app import create_app
from edge_node.settings import EdgeSettings


def main() -> None:
    settings = EdgeSettings()  # type: ignore[call-arg]  (read from the environment)
    if settings.log_format == "json":
        configure_logging("edge", "json")
    serve(create_app(settings), settings.host, settings.port, **uvicorn_logging(settings.log_format))


if __name__ == "__main__":
    main()
