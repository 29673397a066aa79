# Rewrites citations of the shared design notes (outside the repository) to the docs in
# docs/. Usage: sed -i -f docs/citations.sed FILE...   (idempotent; order matters:
# specific section renames first, then the file names).
s|DESIGN\.md, "Mobility"|docs/architecture.md, "Mobility and handover"|g
s|DESIGN\.md "Mobility"|docs/architecture.md "Mobility and handover"|g
s|DESIGN\.md, "Identity, integrity"|docs/architecture.md, "Identity, integrity, privacy"|g
s|DESIGN\.md "Identity, integrity"|docs/architecture.md "Identity, integrity, privacy"|g
s|DESIGN\.md, "One round"|docs/architecture.md, "One round"|g
s|DESIGN\.md "One round"|docs/architecture.md "One round"|g
s|(DESIGN\.md,$|(docs/architecture.md,|g
s|DESIGN\.md: no algorithm is written twice|docs/architecture.md, "Layers": no algorithm is written twice|g
s|ALGORITHMS\.md §1\b|docs/algorithms.md §1|g
s|ALGORITHMS\.md §2\b|docs/algorithms.md §2|g
s|ALGORITHMS\.md §3\b|docs/algorithms.md §3|g
s|ALGORITHMS\.md §4\b|docs/algorithms.md §4|g
s|ALGORITHMS\.md §5\b|docs/algorithms.md §5|g
s|ALGORITHMS\.md §6\b|docs/algorithms.md §6|g
s|ALGORITHMS\.md §7\b|docs/algorithms.md §7|g
s|ALGORITHMS\.md §8\b|docs/algorithms.md §8|g
s|ALGORITHMS\.md §9\b|docs/algorithms.md §9|g
s|ALGORITHMS\.md|docs/algorithms.md|g
s|DESIGN\.md|docs/architecture.md|g
