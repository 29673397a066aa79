"""The edge's configuration, read from ``BMFL_EDGE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class EdgeSettings(BaseSettings):
    """``BMFL_EDGE_RPC_URL``, ``BMFL_EDGE_DEPLOYMENT``, … (see each field)."""

    model_config = SettingsConfigDict(env_prefix="BMFL_EDGE_", extra="ignore")

    rpc_url: str = Field("http://127.0.0.1:8545", description="JSON-RPC URL of the chain")
    deployment: Path = Field(description="deployment JSON file of the BMFL contracts (chain.deploy)")
    private_key: SecretStr = Field(description="the edge's account key (0x-hex); the operator added it as an edge")
    blob_store: str = Field(description="blob store: a directory (local mode) or kubo:http://host:5001")
    state_dir: Path = Field(description="directory of the edge's SQLite database and the tasks' test sets")
    cloud_url: str | None = Field(None, description="cloud aggregator URL; its GET /edges locates old edges on handover")
    x: float = Field(0.0, description="the edge's position, x (same units as the vehicles')")
    y: float = Field(0.0, description="the edge's position, y")
    max_update_bytes: int = Field(16 << 20, gt=0, description="largest update blob accepted (HTTP 413 above)")
    max_test_set_bytes: int = Field(
        64 << 20, gt=0, description="largest test set a task brings (PUT /tasks/{id}); keep ≥ the cloud's max_blob_bytes"
    )
    max_json_bytes: int = Field(1 << 20, gt=0, description="largest JSON body or form field (HTTP 413 above)")
    torch_threads: int = Field(1, ge=1, description="torch CPU threads for filtering, aggregation and evaluation")
    log_format: Literal["text", "json"] = Field("text", description="log lines as text, or one JSON object per line (task and round fields, access log)")
    host: str = Field("127.0.0.1", description="address to listen on (python -m edge_node)")
    port: int = Field(8100, ge=1, lt=65536, description="port to listen on (python -m edge_node)")
