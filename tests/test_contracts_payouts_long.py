"""The long run of ``test_contracts_payouts.py``'s fuzz (60 more hypothesis scenarios of
the contract's payouts against ``split_payouts`` and the exact-fraction reference, to the
wei), in a file of its own so that ``--dist loadfile`` can run it on one worker, with its
own Anvil, while the short run and the rest of the suite use the other (slow).

Its call runs without line coverage (``no_cover``, pytest-cov): it drives the same code
as the short run with the same strategy (with ``--hypothesis-seed=1`` the short run alone
covers every line the two cover together), and under ``sys.settrace`` web3's Python
client ran 2–3 times slower, which made this the longest test of ``make test``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given

from chain_fixtures import Chain, chain, chain_module  # noqa: F401
from payout_fuzz import check_against_reference, fuzz, scenarios


@pytest.mark.slow
@pytest.mark.no_cover
@fuzz(60)
@given(case=scenarios())
def test_contract_payouts_equal_reference_long(chain: Chain, case: dict[str, Any]) -> None:
    check_against_reference(chain, case)
