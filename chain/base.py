"""Shared machinery of the typed contract clients: sending transactions, receipts,
events decoded into pydantic models, and reverts carrying the custom error's name."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar, Self

from eth_abi import decode as abi_decode
from eth_typing import HexStr
from eth_utils import function_abi_to_4byte_selector, to_checksum_address
from eth_utils.abi import get_abi_input_types
from hexbytes import HexBytes
from pydantic import BaseModel, ConfigDict, create_model
from web3 import Web3
from web3.contract.contract import Contract, ContractFunction
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from chain.artifacts import ARTIFACTS_DIR, load_artifact


class ContractRevert(Exception):
    """A call reverted; ``name`` is the custom error (e.g. ``"NotCloud"``), ``args`` its arguments."""

    def __init__(self, name: str, args: dict[str, Any], data: str) -> None:
        self.name = name
        self.args_by_name = args
        self.data = data
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
        super().__init__(f"{name}({shown})")


class ChainEvent(BaseModel):
    """A decoded log; subclasses (built from the ABI) add the event's fields."""

    model_config = ConfigDict(frozen=True)

    event: str
    address: str
    block_number: int
    tx_hash: str
    log_index: int


class Receipt(BaseModel):
    """A mined transaction with its decoded events."""

    model_config = ConfigDict(frozen=True)

    tx_hash: str
    block_number: int
    gas_used: int
    events: list[ChainEvent]

    def event(self, name: str) -> ChainEvent:
        """The first event called ``name``."""
        for ev in self.events:
            if ev.event == name:
                return ev
        raise LookupError(f"no {name} event in {self.tx_hash}")


def _py_type(abi: dict[str, Any], owner: str) -> Any:
    typ: str = abi["type"]
    if typ.endswith("]"):
        inner = dict(abi, type=typ[: typ.rindex("[")])
        return list[_py_type(inner, owner)]  # type: ignore[misc]
    if typ == "tuple":
        name = abi.get("internalType", "struct Tuple").split()[-1].split(".")[-1].split("[")[0]
        fields = {c["name"]: (_py_type(c, owner), ...) for c in abi["components"]}
        return create_model(f"{owner}{name}", __config__=ConfigDict(frozen=True), **fields)  # type: ignore[call-overload]
    if typ.startswith(("uint", "int")):
        return int
    if typ == "bool":
        return bool
    return str  # address, bytesN, bytes, string


def _normalise(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return HexBytes(value).to_0x_hex()
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _normalise(v) for k, v in value.items()}
    return value


@lru_cache(maxsize=None)
def event_models(contract_name: str) -> dict[str, type[ChainEvent]]:
    """Pydantic models of every event of ``contract_name``, built from its ABI."""
    models: dict[str, type[ChainEvent]] = {}
    for item in load_artifact(contract_name).abi:
        if item["type"] == "event":
            fields = {i["name"]: (_py_type(i, item["name"]), ...) for i in item["inputs"]}
            models[item["name"]] = create_model(item["name"], __base__=ChainEvent, **fields)  # type: ignore[call-overload]
    return models


@lru_cache(maxsize=1)
def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for path in sorted(ARTIFACTS_DIR.glob("*.json")):
        for item in load_artifact(path.stem).abi:
            if item["type"] == "error":
                types = [i["type"] for i in item["inputs"]]
                table[function_abi_to_4byte_selector(item)] = (item["name"], [i["name"] for i in item["inputs"]], types)
    return table


def decode_revert(data: str | bytes | None) -> ContractRevert:
    """Decode revert data into a :class:`ContractRevert` named after the custom error."""
    raw = bytes(HexBytes(data)) if data else b""
    entry = _error_table().get(raw[:4])
    if entry is None:
        if raw[:4] == bytes.fromhex("08c379a0"):
            return ContractRevert("Error", {"message": abi_decode(["string"], raw[4:])[0]}, HexBytes(raw).to_0x_hex())
        if raw[:4] == bytes.fromhex("4e487b71"):
            return ContractRevert("Panic", {"code": abi_decode(["uint256"], raw[4:])[0]}, HexBytes(raw).to_0x_hex())
        return ContractRevert("UnknownRevert", {}, HexBytes(raw).to_0x_hex())
    name, names, types = entry
    values = [
        to_checksum_address(v) if t == "address" else _normalise(v) for t, v in zip(types, abi_decode(types, raw[4:]))
    ]
    return ContractRevert(name, dict(zip(names, values)), HexBytes(raw).to_0x_hex())


def calldata(w3: Web3, fn: ContractFunction) -> HexStr:
    """``fn``'s calldata, its arguments encoded by the ABI codec as they are: the same
    bytes as web3's ``fn._encode_transaction_data()`` for arguments already in ABI form."""
    selector = function_abi_to_4byte_selector(fn.abi)
    return HexStr(HexBytes(selector + w3.codec.encode(get_abi_input_types(fn.abi), fn.args)).to_0x_hex())


class ContractClient:
    """A deployed contract seen through its committed artifact; transactions come from ``sender``."""

    artifact: ClassVar[str]

    def __init__(self, w3: Web3, address: str, sender: str | None = None) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.sender = to_checksum_address(sender) if sender else None
        self.contract: Contract = w3.eth.contract(address=self.address, abi=load_artifact(self.artifact).abi)
        self._by_topic: dict[HexBytes, Any] | None = None

    def as_sender(self, sender: str) -> Self:
        """The same client sending from ``sender``."""
        return type(self)(self.w3, self.address, sender)

    @classmethod
    def deploy(cls, w3: Web3, sender: str, *args: Any) -> tuple[Self, Receipt]:
        """Deploy the contract from ``sender`` with constructor ``args``."""
        art = load_artifact(cls.artifact)
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        try:
            tx_hash = factory.constructor(*args).transact({"from": to_checksum_address(sender)})
        except ContractLogicError as exc:
            raise decode_revert(exc.data) from exc
        raw = w3.eth.wait_for_transaction_receipt(tx_hash)
        client = cls(w3, raw["contractAddress"], sender)
        return client, client.receipt(raw)

    def call(self, fn: ContractFunction, block: int | str = "latest") -> Any:
        """Evaluate a view function at ``block``, decoding reverts."""
        try:
            return fn.call(block_identifier=block)
        except ContractLogicError as exc:
            raise decode_revert(exc.data) from exc

    def send(self, fn: ContractFunction, value: int = 0, gas: int | None = None, *, abi_ready: bool = False) -> Receipt:
        """Send a transaction and wait for it; reverts raise :class:`ContractRevert`.

        ``gas`` skips the node's estimate, which runs against the latest block: a call that
        depends on time (a deadline passed) must be judged by the block it lands in, and a
        chain that mines only on demand keeps an old latest block. A mined revert is
        replayed at its block to name the error. ``abi_ready``: ``fn``'s arguments are
        already what the ABI codec takes (ints, ``bytes``, tuples), so the calldata is
        encoded directly (:func:`calldata`), without web3's per-value normalisation, which
        costs about half a millisecond per value (a ``settle`` page carries thousands)."""
        if self.sender is None:
            raise ValueError(f"{type(self).__name__} is read-only: give a sender")
        tx: dict[str, Any] = {"from": self.sender, "value": value} | ({"gas": gas} if gas else {})
        try:
            if abi_ready:
                tx_hash = self.w3.eth.send_transaction(tx | {"to": self.address, "data": calldata(self.w3, fn)})  # type: ignore[arg-type]
            else:
                tx_hash = fn.transact(tx)  # type: ignore[arg-type]
        except ContractLogicError as exc:
            raise decode_revert(exc.data) from exc
        raw = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if raw["status"] != 1:
            try:
                fn.call(tx, block_identifier=raw["blockNumber"])  # type: ignore[arg-type]
            except ContractLogicError as exc:
                raise decode_revert(exc.data) from exc
            raise ContractRevert("Reverted", {"tx_hash": HexBytes(tx_hash).to_0x_hex()}, "0x")
        return self.receipt(raw)

    def receipt(self, raw: TxReceipt) -> Receipt:
        """Wrap a web3 receipt, decoding this contract's events."""
        mine = [log for log in raw["logs"] if log["address"] == self.address]
        return Receipt(
            tx_hash=HexBytes(raw["transactionHash"]).to_0x_hex(),
            block_number=raw["blockNumber"],
            gas_used=raw["gasUsed"],
            events=[self._decode_log(log) for log in mine if self._event_for(log) is not None],
        )

    def events(self, name: str, from_block: int = 0, to_block: int | str = "latest", **filters: Any) -> list[ChainEvent]:
        """All ``name`` events in the block range, optionally filtered on indexed arguments."""
        event = getattr(self.contract.events, name)
        logs = event.get_logs(from_block=from_block, to_block=to_block, argument_filters=filters or None)
        return [self._model(name, log) for log in logs]

    def _event_for(self, log: Any) -> Any:
        topic = HexBytes(log["topics"][0]) if log["topics"] else None
        return self._events_by_topic().get(topic)

    def _events_by_topic(self) -> dict[HexBytes, Any]:
        """The contract's events by topic, built once per client (each topic is a keccak of
        the event's signature: recomputed for every log it cost more than the decoding)."""
        if self._by_topic is None:
            self._by_topic = {}
            for ev in self.contract.all_events():
                self._by_topic.setdefault(HexBytes(ev.topic), ev)
        return self._by_topic

    def _decode_log(self, log: Any) -> ChainEvent:
        ev = self._event_for(log)
        return self._model(ev.event_name, ev.process_log(log))

    def _model(self, name: str, decoded: Any) -> ChainEvent:
        model = event_models(self.artifact)[name]
        return model(
            event=name,
            address=decoded["address"],
            block_number=decoded["blockNumber"],
            tx_hash=HexBytes(decoded["transactionHash"]).to_0x_hex(),
            log_index=decoded["logIndex"],
            **_normalise(dict(decoded["args"])),
        )
