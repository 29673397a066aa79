"""Kubo RPC client and ``/ipfs/{cid}`` gateway over real HTTP on 127.0.0.1.

No Kubo daemon can run here, so the Kubo client is tested against a small fake of the
RPC endpoints it uses (``add``, ``cat``, ``pin/add``, ``pin/ls``, ``block/stat``,
``files/stat``): a real uvicorn server on a free loopback port, reached by the real
httpx client. Fakes that lie about CIDs or bytes, fail transiently, keep failing, or
stall check the refusals, bounded retries and timeouts.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Awaitable, Callable, Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from typer.testing import CliRunner

from bmfl.blobs.cid import PROFILES, compute_cid
from bmfl.blobs.errors import BlobIntegrityError, BlobNotFoundError, BlobTooLargeError, RemoteError
from bmfl.blobs.gateway import gateway_router
from bmfl.blobs.gateway_client import GatewayClient
from bmfl.blobs.kubo import KuboBlobStore, KuboCIDMismatchError
from bmfl.blobs.local import LocalBlobStore
from bmfl.blobs.retry import RetryPolicy
from bmfl.blobs.store import BlobStat
from launcher.cli import app

FAST = RetryPolicy(attempts=3, backoff_s=0.01)
DATA = bytes(range(256)) * 2000  # 512,000 bytes: two chunks, a dag-pb root


@contextmanager
def serve(api: FastAPI) -> Iterator[str]:
    """Run ``api`` with uvicorn on a free 127.0.0.1 port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(api, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def kubo_error(message: str) -> JSONResponse:
    return JSONResponse({"Message": message, "Code": 0, "Type": "error"}, status_code=500)


def fake_kubo(mode: str = "honest", failures: int = 0) -> tuple[FastAPI, dict]:
    """The RPC endpoints the client calls. ``failures`` first requests answer 503."""
    api = FastAPI()
    state: dict = {"blobs": {}, "pins": set(), "calls": 0, "add_params": None}

    @api.middleware("http")
    async def flaky(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        state["calls"] += 1
        if mode == "down" or state["calls"] <= failures:
            return Response("busy", status_code=503)
        if mode == "stall":  # answers late without holding the server's loop: every attempt is counted on arrival
            await asyncio.sleep(0.5)
        return await call_next(request)

    @api.post("/api/v0/add")
    async def add(request: Request) -> dict:
        state["add_params"] = dict(request.query_params)
        head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + await request.body())
        data = next(message.iter_parts()).get_payload(decode=True)
        profile = PROFILES["v0"] if mode == "wrong_cid" else PROFILES["v1_256k"]
        cid = str(compute_cid(data, profile))
        state["blobs"][cid] = data
        if request.query_params["pin"] == "true":
            state["pins"].add(cid)
        named = compute_cid(data, profile).encode("base58btc") if mode == "base58" else cid  # as js-ipfs prints
        return {"Name": "blob", "Hash": named, "Size": str(len(data))}

    @api.post("/api/v0/cat")
    def cat(arg: str) -> Response:
        if arg not in state["blobs"]:
            return kubo_error(f"block was not found locally (offline): ipld: could not find {arg}")
        data = state["blobs"][arg]
        return Response(data[:-1] + b"!" if mode == "lying_cat" else data)

    @api.post("/api/v0/block/stat")
    def block_stat(arg: str, offline: bool = False) -> Response:
        if arg not in state["blobs"]:
            return kubo_error(f"block was not found locally (offline): ipld: could not find {arg}")
        return JSONResponse({"Key": arg, "Size": 1})

    @api.post("/api/v0/files/stat")
    def files_stat(arg: str) -> dict:
        return {"Hash": arg.removeprefix("/ipfs/"), "Size": len(state["blobs"][arg.removeprefix("/ipfs/")])}

    @api.post("/api/v0/pin/add")
    def pin_add(arg: str) -> Response:
        if arg not in state["blobs"]:
            return kubo_error(f"pin: block was not found locally (offline): ipld: could not find {arg}")
        state["pins"].add(arg)
        return JSONResponse({"Pins": [arg]})

    @api.post("/api/v0/pin/ls")
    def pin_ls(arg: str, type: str) -> Response:
        if arg not in state["pins"]:
            return kubo_error(f"path '{arg}' is not pinned")
        return JSONResponse({"Keys": {arg: {"Type": "recursive"}}})

    return api, state


def test_kubo_store_against_fake_rpc() -> None:
    api, state = fake_kubo()
    with serve(api) as url:
        store = KuboBlobStore(url, retry=FAST)
        cid = store.put(DATA)
        assert cid == str(compute_cid(DATA))
        assert state["add_params"] == {
            "cid-version": "1", "raw-leaves": "true", "chunker": "size-262144", "hash": "sha2-256", "pin": "false"
        }
        assert store.get(cid) == DATA and store.has(cid)
        assert store.stat(cid) == BlobStat(cid, len(DATA), pinned=False)
        store.pin(cid)
        assert store.stat(cid).pinned
        absent = str(compute_cid(b"absent"))
        assert not store.has(absent)
        with pytest.raises(BlobNotFoundError):
            store.stat(absent)
        with pytest.raises(BlobNotFoundError, match="not found"):
            store.get(absent)
        with pytest.raises(BlobNotFoundError, match="not found"):
            store.pin(absent)
        store.close()


def test_kubo_wrong_cid_is_refused() -> None:
    api, _ = fake_kubo("wrong_cid")
    with serve(api) as url, pytest.raises(KuboCIDMismatchError, match="Qm"):
        KuboBlobStore(url, retry=FAST).put(DATA)


def test_kubo_cid_in_another_multibase_is_the_same_cid() -> None:
    api, _ = fake_kubo("base58")
    with serve(api) as url:
        assert KuboBlobStore(url, retry=FAST).put(DATA) == str(compute_cid(DATA))


def test_kubo_lying_cat_is_refused() -> None:
    api, _ = fake_kubo("lying_cat")
    with serve(api) as url:
        store = KuboBlobStore(url, retry=FAST)
        with pytest.raises(BlobIntegrityError):
            store.get(store.put(DATA))


def test_kubo_transient_failures_are_retried() -> None:
    api, state = fake_kubo(failures=2)
    with serve(api) as url:
        assert KuboBlobStore(url, retry=FAST).put(b"hello world", pin=True) == str(compute_cid(b"hello world"))
    assert state["calls"] == 3


@pytest.mark.parametrize("mode, last", [("down", r"\(HTTP 503\)"), ("stall", r"\(ReadTimeout: ")])
def test_kubo_persistent_failure_gives_up_after_bounded_retries(mode: str, last: str) -> None:
    """Three attempts, then an error naming the last failure: a stalled node (which would
    answer 200 after 0.5 s) is cut off by the client's own 0.1 s timeout each time."""
    api, state = fake_kubo(mode)
    with serve(api) as url:
        with pytest.raises(RemoteError, match=r"after 3 attempts " + last):
            KuboBlobStore(url, retry=FAST, timeout_s=0.1).put(DATA)
    assert state["calls"] == 3


def test_kubo_unreachable_gives_up() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RemoteError, match="ConnectError"):
        KuboBlobStore(f"http://127.0.0.1:{port}", retry=FAST).has(str(compute_cid(b"x")))


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[tuple[str, LocalBlobStore]]:
    store = LocalBlobStore(tmp_path)
    api = FastAPI()
    api.include_router(gateway_router(store))
    with serve(api) as url:
        yield url, store


def test_gateway_serves_verified_blobs(gateway: tuple[str, LocalBlobStore]) -> None:
    url, store = gateway
    cid = store.put(DATA)
    client = GatewayClient(url, retry=FAST)
    assert client.fetch(cid) == DATA
    with pytest.raises(BlobNotFoundError):
        client.fetch(str(compute_cid(b"absent")))
    with pytest.raises(BlobTooLargeError):
        GatewayClient(url, retry=FAST, max_bytes=1000).fetch(cid)
    client.close()


def test_gateway_http_semantics(gateway: tuple[str, LocalBlobStore]) -> None:
    url, store = gateway
    cid = store.put(b"hello world")
    reply = httpx.get(f"{url}/ipfs/{cid}")
    assert reply.status_code == 200 and reply.content == b"hello world"
    assert reply.headers["etag"] == f'"{cid}"' and "immutable" in reply.headers["cache-control"]
    assert httpx.get(f"{url}/ipfs/not-a-cid").status_code == 400
    assert httpx.get(f"{url}/ipfs/{compute_cid(b'absent')}").status_code == 404
    path = store.path_of(cid)
    path.chmod(0o644)
    path.write_bytes(b"hello w0rld")
    reply = httpx.get(f"{url}/ipfs/{cid}")
    assert reply.status_code == 500 and "verification" in reply.json()["detail"]


def test_gateway_client_refuses_a_lying_gateway() -> None:
    api = FastAPI()
    api.get("/ipfs/{cid}")(lambda cid: Response(b"not what you asked for"))
    with serve(api) as url, pytest.raises(BlobIntegrityError):
        GatewayClient(url, retry=FAST).fetch(str(compute_cid(DATA)))


def test_cli_get_through_gateway_and_kubo(gateway: tuple[str, LocalBlobStore], tmp_path: Path) -> None:
    url, store = gateway
    cid = store.put(DATA)
    out = tmp_path / "out.bin"
    result = CliRunner().invoke(app, ["blob", "get", cid, "--gateway", url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == DATA
    api, _ = fake_kubo()
    src = tmp_path / "in.bin"
    src.write_bytes(DATA)
    with serve(api) as kubo:
        result = CliRunner().invoke(app, ["blob", "put", str(src), "--kubo", kubo])
        assert result.exit_code == 0 and result.output.strip() == cid
