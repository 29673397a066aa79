"""Benchmarks: each measures ours and a baseline side by side in one process run
(interleaved) and prints both and their ratio. ``make bench`` runs them all
(``python -m bench.run_all``) and writes ``docs/performance.md``."""
