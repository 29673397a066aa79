"""``bmfl reproduce``: the seed papers' experiments (BMFL Fig. 5–7, FBFL, `001`) as a grid
of ``bmfl simulate`` runs, reported in ``docs/results.md`` with plots."""
