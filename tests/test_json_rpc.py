"""``chain.json_rpc.KeptAliveRpc`` against a real Anvil and real HTTP servers: it
answers what web3 answers, keeps one connection, survives the node closing it, and
refuses what is not a JSON-RPC answer instead of handing it on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chain.anvil import free_port
from chain_fixtures import Chain, chain, chain_module  # noqa: F401
from chain.json_rpc import JsonRpcError, KeptAliveRpc, NodeUnreachable


def test_reads_the_head_web3_reads_over_one_connection(chain: Chain) -> None:
    rpc = KeptAliveRpc(chain.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    block = rpc.call("eth_getBlockByNumber", ["latest", False])
    assert int(block["number"], 16) == chain.w3.eth.block_number
    assert block["hash"] == chain.w3.eth.get_block("latest")["hash"].to_0x_hex()
    first = rpc._conn
    assert int(rpc.call("eth_chainId", []), 16) == chain.w3.eth.chain_id
    assert rpc._conn is first  # kept alive
    first.sock.close()  # type: ignore[union-attr]  # as if the node had dropped it
    assert int(rpc.call("eth_blockNumber", []), 16) == chain.w3.eth.block_number
    assert rpc._conn is not first
    rpc.close()


class _Node(BaseHTTPRequestHandler):
    """Answers every POST with ``self.server.reply`` (status, body); keeps each request's Authorization header."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        status, body = self.server.reply  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def node() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Node)
    server.seen, server.reply = [], (200, b"")  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_http_error_status_is_an_unreachable_node(node: ThreadingHTTPServer) -> None:
    node.reply = (502, b"bad gateway")  # type: ignore[attr-defined]  # a proxy in front of a node that is down
    with pytest.raises(NodeUnreachable, match="HTTP 502"):
        KeptAliveRpc(f"http://127.0.0.1:{node.server_port}/").call("eth_blockNumber", [])


@pytest.mark.parametrize(
    "reply, reason",
    [
        ((200, b"<html>not json</html>"), "not JSON"),
        ((200, b'{"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no such method"}}'), "no such method"),
        ((200, b"[1, 2]"), "answered"),
    ],
)
def test_anything_but_a_result_is_refused(node: ThreadingHTTPServer, reply: tuple[int, bytes], reason: str) -> None:
    node.reply = reply  # type: ignore[attr-defined]
    with pytest.raises(JsonRpcError, match=reason):
        KeptAliveRpc(f"http://127.0.0.1:{node.server_port}/").call("eth_blockNumber", [])


def test_credentials_in_the_url_go_in_a_basic_auth_header(node: ThreadingHTTPServer) -> None:
    node.reply = (200, b'{"jsonrpc": "2.0", "id": 1, "result": "0x10"}')  # type: ignore[attr-defined]
    assert KeptAliveRpc(f"http://ops:s%40fe@127.0.0.1:{node.server_port}/rpc").call("eth_blockNumber", []) == "0x10"
    assert node.seen == ["Basic b3BzOnNAZmU="]  # type: ignore[attr-defined]  # base64 of "ops:s@fe"


def test_a_node_that_is_down_raises_at_once() -> None:
    rpc = KeptAliveRpc(f"http://127.0.0.1:{free_port()}/", timeout=2)
    with pytest.raises(NodeUnreachable, match="ConnectionRefusedError"):
        rpc.call("eth_blockNumber", [])
    with pytest.raises(ValueError, match="not an HTTP"):
        KeptAliveRpc("ws://127.0.0.1:8545")
