"""The intake benchmark's baseline server: upload endpoints with the edge's form
(vehicle, signature, ε, blob) and its binary route (the blob as the body) that check
nothing and write the blob to a directory (``BENCH_SINK_DIR``): what receiving an
update costs without the protocol's checks.

    BENCH_SINK_DIR=/tmp/sink python -m uvicorn bench.intake_sink:app --port 8999
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile

app = FastAPI()
SINK = Path(os.environ.get("BENCH_SINK_DIR", "/tmp/bmfl-intake-sink"))
SINK.mkdir(parents=True, exist_ok=True)


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@app.post("/tasks/{task_id}/rounds/{round_}/updates", status_code=202)
def post_update(
    task_id: int,
    round_: int,
    vehicle: str = Form(),
    signature: str | None = Form(None),
    epsilon: float | None = Form(None),
    blob: UploadFile = File(),
) -> dict:
    (SINK / f"{uuid.uuid4().hex}.safetensors").write_bytes(blob.file.read())
    return {"task_id": task_id, "round": round_, "vehicle": vehicle}


@app.put("/tasks/{task_id}/rounds/{round_}/updates/{vehicle}", status_code=202)
async def put_update(task_id: int, round_: int, vehicle: str, request: Request) -> dict:
    (SINK / f"{uuid.uuid4().hex}.safetensors").write_bytes(await request.body())
    return {"task_id": task_id, "round": round_, "vehicle": vehicle}
