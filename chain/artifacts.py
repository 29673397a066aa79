"""Compiled contract artifacts committed under ``contracts/artifacts`` (never compiled at run time)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CONTRACTS_DIR = Path(os.environ.get("BMFL_CONTRACTS_DIR", Path(__file__).resolve().parent.parent / "contracts"))
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"


class Artifact(BaseModel):
    """ABI, bytecode and provenance of one compiled contract."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    contract_name: str = Field(alias="contractName")
    source_name: str = Field(alias="sourceName")
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str = Field(alias="deployedBytecode")
    compiler: dict[str, Any]
    sources: dict[str, str]


@lru_cache(maxsize=None)
def load_artifact(name: str) -> Artifact:
    """The artifact of contract ``name`` (for example ``"BMFLTasks"``)."""
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no artifact {path}; run `node contracts/build.js`")
    return Artifact.model_validate(json.loads(path.read_text()))
