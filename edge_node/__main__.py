"""``python -m edge_node``: serve the edge configured by ``BMFL_EDGE_*`` variables."""

from __future__ import annotations

import uvicorn

from edge_node.app import create_app
from edge_node.settings import EdgeSettings


def main() -> None:
    settings = EdgeSettings()  # type: ignore[call-arg]  (read from the environment)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
