"""Cloud settings, read from ``BMFL_CLOUD_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class EdgeEndpoint(BaseModel):
    url: str = Field(description="base URL of the edge's API")
    x: float = Field(0.0, description="edge position (km)")
    y: float = Field(0.0, description="edge position (km)")


class CloudSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BMFL_CLOUD_")

    rpc_url: str = Field("http://127.0.0.1:8545", description="JSON-RPC URL of the chain")
    deployment: Path = Field(Path("deployments/31337.json"), description="deployment file (contract addresses)")
    private_key: SecretStr = Field(description="key of the account holding the registry's cloud role")
    blob_store: str = Field("runs/blobs", description="blob store: a directory, or kubo:http://host:5001")
    state_dir: Path = Field(Path("runs/cloud"), description="SQLite state")
    edges: list[EdgeEndpoint] = Field(default_factory=list, description='JSON list: [{"url": ..., "x": ..., "y": ...}]')
    round_timeout_s: float = Field(300.0, gt=0, description="how long a round waits for the selected vehicles")
    poll_interval_s: float = Field(0.2, gt=0, description="how often the cloud polls the edges' progress")
    max_blob_bytes: int = Field(64 << 20, gt=0, description="largest model or test-set blob accepted")
    max_json_bytes: int = Field(1 << 20, gt=0, description="largest JSON body or form field, e.g. the spec (HTTP 413 above)")
    torch_threads: int = Field(1, ge=1, description="torch CPU threads of this process")
    log_format: Literal["text", "json"] = Field("text", description="log lines as text, or one JSON object per line (task and round fields, access log)")
    host: str = Field("127.0.0.1", description="listen address (python -m cloud_aggregator)")
    port: int = Field(8000, description="listen port (python -m cloud_aggregator)")
