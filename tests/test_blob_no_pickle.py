"""No code path may unpickle: received blobs are safetensors only (acceptance, issue 6)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", "node_modules", ".git", "tests", "build", "dist"}
FORBIDDEN = re.compile(
    r"^\s*(import|from)\s+(c?pickle|_pickle|dill|cloudpickle|joblib)\b"
    r"|\b(c?pickle|dill|cloudpickle|joblib)\.loads?\("
    r"|\btorch\.load\("
    r"|allow_pickle\s*=\s*True"
    r"|weights_only\s*=\s*False",
    re.MULTILINE,
)


def python_sources() -> list[Path]:
    return [p for p in ROOT.rglob("*.py") if not SKIP.intersection(p.relative_to(ROOT).parts)]


def test_forbidden_patterns_are_caught() -> None:
    for line in ["import pickle", "x = torch.load(f)", "np.load(f, allow_pickle=True)", "pickle.loads(b)"]:
        assert FORBIDDEN.search(line)


def test_no_unpickling_anywhere_in_the_code_base() -> None:
    sources = python_sources()
    assert any(p.name == "codec.py" for p in sources)
    hits = [
        f"{p.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0).strip()}"
        for p in sources
        for text in [p.read_text(errors="replace")]
        for m in FORBIDDEN.finditer(text)
    ]
    assert not hits, "unpickling found:\n" + "\n".join(hits)
