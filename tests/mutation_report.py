"""docs/mutation.md from a mutmut 3 run (``make mutation``): killed and surviving mutants
per file, the kill rate, and every survivor with its mutated line and an explanation
(an equivalent mutant, or a known gap). Run from the repository root after
``mutmut run``; reads ``mutants/**/*.meta`` and mutmut's own diff of each survivor.

Kill rate = (killed + timeout) / (every mutant checked, "no tests" included: a mutant
no selected test reaches is a gap too)."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# survivor → why it is acceptable ("equivalent: ...") or what it shows ("gap: ...");
# keyed by mutmut's mutant name, which is stable while the function is unchanged
EXPLAINED: dict[str, str] = {
    "bmfl.aggregation.reweight.xǁResidualReweightingǁaggregate__mutmut_95": "gap: no test has 0 < Σθ ≤ 1 (paper θ whose kept ϖ sum to at most 1), where the equal-weights fallback would wrongly apply",
    "bmfl.filters.l2_norm.xǁL2NormDetectorǁ__call____mutmut_1": "equivalent: the L2-norm filter ignores round_index, so its default is unused",
    "bmfl.filters.self_reliability.x_reliability__mutmut_8": "equivalent: dirs is ±1, so dirs >= 0 and dirs > 0 agree",
}

# the same reason for every survivor whose mutated line matches (checked after EXPLAINED)
RULES: list[tuple[str, str]] = [
    (r"theta = \(theta \* theta\.max\(\)\) \*\* 2", "equivalent: (θ·max)² = max⁴·(θ/max)², and the weights divide by Σθ, so the scale cancels"),
    (r'theta\.max\(\) >= 0', "equivalent: when every θ is 0 the division gives NaN, Σθ > 0 is false and the equal-weights branch runs as before"),
    (r"elif k > 2:", "equivalent: with K = 2 every ϖ is 1, so the spread s_n and θ are 0 either way"),
    (r"arange\(k(, dtype=None|, )\)", "equivalent: integer ranks give the same slopes (the division promotes to float)"),
    (r"median\(slopes, count=k - 1\)", "equivalent: dim defaults to the last axis, which is dim 2 here"),
    (r"chunk_size: int = 4097", "equivalent: the chunk size changes memory use, not the result (test_reweight_chunking_does_not_change_the_result)"),
    (r"\.sum\(0, (dtype=None|)\)", "equivalent: the sum is added into a float64 accumulator; only float32 rounding of ϖ sums changes"),
    (r"sort\((dim=0|scores), (stable=None|stable=False|)\)", "equivalent in practice: CPU sorts of these small inputs are stable anyway; ties are rare in float updates"),
    (r'device\.type != "cpu"|part = x\.sort|part = None', "equivalent on CPU: the sort branch serves other devices and gives the same medians"),
    (r"np\.partition\(.*(or True|lo != hi)", "not killed: NumPy's introselect leaves the lower middle in place on every input tried (n <= 256); the (lo, hi) kth is what guarantees it"),
    (r"np\.partition\(.*(and False|\), \)\))", "equivalent: partitioning at (lo, hi) when lo == hi, or along the default last axis where dim is -1, selects the same values"),
    (r"nan_to_num\(varpi, (nan=None|nan=2\.0|)\)", "equivalent: ϖ is clipped to ≤ 1 and its division never gives NaN (|e| = 0 gives +inf, clipped to 1)"),
    (r"median\((inner|ys|residual.*\[:, 1:\]), \)", "equivalent: median's dim defaults to the last axis, the one meant"),
    (r"argsort\((dim=1, |)(stable=None|stable=False|stable=True|)\)", "equivalent: on (n, K) rows the last axis is dim 1; CPU sorts of these small rows are stable anyway"),
    (r"if k <= 3:", "equivalent: with K = 3 the repeated-median line leaves every ϖ at 1 (test_confidences_match_the_written_out_equations, K = 3)"),
    (r"stacked = (None|device\.type == \"cpu\")|copy\.copy\(model\)|len\(known\) >= memo|popitem\(last=(None|True)\)", "equivalent: vectorising, copying and memo eviction change speed or memory, not the accuracies"),
    (r"round_index: int = 2,", "equivalent: only filters read round_index, and FilteredAggregator passes it explicitly"),
    (r"self\.aggregate\(updates\.to\(torch\.float32\), sizes, None\)", "equivalent: no aggregation rule reads the reference (filters do, before the rule)"),
    (r"batch_size: int = \d+|memo: int = \d+", "equivalent: batch size and memo size change speed, not the accuracies"),
    (r"\.to\(None\)", "equivalent: Tensor.to(None) returns the tensor unchanged (inputs are already of that dtype here)"),
    (r'float\("INF"\)|float\("-INF"\)', "equivalent: float() parses INF and inf alike"),
    (r'raise \w+\((None|"XX.*XX"|"[^a-z]*"|f?"[a-z][^A-Z]*")\)', "message text only: callers and tests rely on the exception type, not its wording"),
    (r'"XX\w+XX"|"[A-Z_]+"', "gap (diagnostic): a key of the info dict that no test reads; diagnostics, not the decision"),
    (r'info\["rule"\] = None', "gap (diagnostic): the inner rule's info dropped; no test reads it"),
    (r"evaluate\(load_vector\(work, v\), data, \)", "equivalent: the batch size changes speed, not the accuracies"),
    (r"AggregationResult\(.*, (None|)\)$|FilterResult\(keep, (None|)\)$", "gap (diagnostic): the info dict dropped; no test reads it"),
]

DETECTED = ("killed", "timeout")
UNCOUNTED = ("not checked", "skipped", "check was interrupted by user")


def main() -> int:
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    rows, survivors, totals = [], [], Counter()
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        source = meta.relative_to("mutants").with_suffix("")
        data = SourceFileMutationData(path=source)
        data.load()
        counts = Counter(status_by_exit_code[code] for code in data.exit_code_by_key.values())
        if not counts:
            continue
        totals += counts
        rows.append((str(source), counts))
        for name, code in sorted(data.exit_code_by_key.items(), key=lambda kv: _number(kv[0])):
            status = status_by_exit_code[code]
            if status not in DETECTED and status not in UNCOUNTED:
                survivors.append((str(source), name, status, _changed_line(get_diff_for_mutant(name, path=source))))

    def rate(c: Counter) -> str:
        checked = sum(n for s, n in c.items() if s not in UNCOUNTED)
        return f"{100 * sum(c[s] for s in DETECTED) / checked:.1f} %" if checked else "n/a"

    out = ["# Mutation testing", "",
           "Generated by `make mutation` (mutmut 3, `[tool.mutmut]` in `pyproject.toml`; report:",
           "`tests/mutation_report.py`). Kill rate = (killed + timeout) / mutants checked, where",
           "\"no tests\" (no selected test reaches the mutant) counts as not killed.", "",
           f"**Overall: {sum(totals[s] for s in DETECTED)} of {sum(n for s, n in totals.items() if s not in UNCOUNTED)} "
           f"killed, kill rate {rate(totals)}.**", "",
           *([f"{sum(totals[s] for s in UNCOUNTED)} mutants were not checked in this run (`mutmut run` was given a subset of "
              "names; `edge_node/uploads.py` needs an edge stack per mutant, about 40 s each on 2 cores).", ""]
             if sum(totals[s] for s in UNCOUNTED) else []),
           "| file | killed | timeout | survived | no tests | other | not checked | kill rate |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for source, c in rows + [("**all**", totals)]:
        other = sum(n for s, n in c.items() if s not in ("killed", "timeout", "survived", "no tests", *UNCOUNTED))
        unchecked = sum(c[s] for s in UNCOUNTED)
        out.append(f"| {source} | {c['killed']} | {c['timeout']} | {c['survived']} | {c['no tests']} | {other} | {unchecked} | {rate(c)} |")
    out += ["", f"## Survivors ({len(survivors)})", "",
            "Each: the mutant, its status, the mutated line, and why it survives.", "",
            "| mutant | status | mutated line | explanation |", "|---|---|---|---|"]  # fmt: skip
    for source, name, status, line in survivors:
        why = EXPLAINED.get(name) or next((r for p, r in RULES if re.search(p, line)), None)
        why = why or "unexplained: a gap until a test kills it or it is shown equivalent"
        cell = line.replace("|", "\\|")
        out.append(f"| `{name}` | {status} | `{cell}` | {why} |")
    print("\n".join(out))
    return 0


def _number(name: str) -> tuple[str, int]:
    stem, _, n = name.rpartition("__mutmut_")
    return stem, int(n) if n.isdigit() else 0


def _changed_line(diff: str) -> str:
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return (added[0] if added else "(line removed)")[:120]


if __name__ == "__main__":
    sys.exit(main())
