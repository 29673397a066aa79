"""Fleet accounts: keys derived from a seed (reproducible runs) and plain ETH
transfers from a funder so the vehicles can pay for their registration."""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

TRANSFER_GAS = 21_000


def fleet_accounts(seed: int, count: int) -> list[LocalAccount]:
    """``count`` accounts whose keys are keccak("bmfl-fleet" · seed · i): the same seed
    always gives the same vehicles (local and test chains only)."""
    return [
        Account.from_key(keccak(b"bmfl-fleet" + seed.to_bytes(8, "big", signed=True) + i.to_bytes(4, "big")))
        for i in range(count)
    ]


def fund(w3: Web3, funder: LocalAccount, addresses: list[str], amount_wei: int) -> int:
    """Top every address below ``amount_wei``/2 up to ``amount_wei`` with transfers signed
    by ``funder`` (sent together, then awaited). Returns the number of transfers."""
    needy = [(a, amount_wei - balance) for a in addresses if (balance := w3.eth.get_balance(a)) < amount_wei // 2]
    nonce = w3.eth.get_transaction_count(funder.address, "pending")
    gas_price = 2 * w3.eth.gas_price
    hashes = []
    for i, (address, value) in enumerate(needy):
        tx = {
            "to": address, "value": value, "gas": TRANSFER_GAS, "gasPrice": gas_price,
            "nonce": nonce + i, "chainId": w3.eth.chain_id,
        }  # fmt: skip
        hashes.append(w3.eth.send_raw_transaction(funder.sign_transaction(tx).raw_transaction))
    for tx_hash in hashes:
        if w3.eth.wait_for_transaction_receipt(tx_hash)["status"] != 1:
            raise RuntimeError(f"funding transfer {tx_hash.hex()} failed")
    return len(needy)
