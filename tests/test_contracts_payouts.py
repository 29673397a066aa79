"""The contract's payouts against the Python mirror ``bmfl.incentives.split_payouts`` and
an independent exact-fraction reference, to the wei, fuzzed with hypothesis on a real
Anvil: 3–6 edges, 1–3 rounds, vehicles moving between edges, θ of 0 and flagged
records, random scores with and without a quorum; every task is finished, settled
(``chain.settlement.settle_task``) and swept after the claim window, and
Σ payouts + block rewards + sweep = escrow to the wei (``tests/payout_fuzz.py``; the long
run of the same fuzz is ``test_contracts_payouts_long.py``)."""

from __future__ import annotations

from typing import Any

from hypothesis import given

from chain_fixtures import Chain, chain, chain_module  # noqa: F401
from payout_fuzz import check_against_reference, fuzz, scenarios


@fuzz(12)
@given(case=scenarios())
def test_contract_payouts_equal_reference(chain: Chain, case: dict[str, Any]) -> None:
    check_against_reference(chain, case)
