"""The cloud aggregator: task publishing REST API, round orchestration across the edges,
the second (cloud) aggregation, and the task's finish and payouts on chain."""
