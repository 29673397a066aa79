"""On-chain side of BMFL: compiled contract artifacts, a local Anvil node, deployment,
typed contract clients and a read-only auditor."""
