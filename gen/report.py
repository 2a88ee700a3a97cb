"""The redundancy report of `refree analyze`: counts of the three modes, per table and total."""

from refree.golden.counts import MODES, add_counts, by_mode, zero_counts
from refree.golden.model import plan_batch, row_group_plans, step_counts
from refree.golden.planner import PartLimits

__all__ = ["analyze", "format_report", "ROWS"]

# (phase, count, label) of each report line, in print order.
ROWS = [
    ("forward", "reads", "forward   table-row reads"),
    ("forward", "adds", "forward   additions"),
    ("backward", "reads", "backward  gradient reads"),
    ("backward", "adds", "backward  merge additions"),
    ("update", "rmw", "update    row read-modify-writes"),
]
# Reduction factors reported: each mode against baseline, and what sharing adds to dedup.
RATIOS = [("baseline", "dedup"), ("baseline", "refree"), ("dedup", "refree")]


def analyze(batch, poolings, limits=None):
    """Report dict: {"tables": [...], "total": {...}}, leaves {mode: n}, plus reductions.

    By default the batch is processed as one part (no limits), as `refree analyze` promises;
    backward and the update count by rows (the engine's), forward by parts.
    """
    limits = limits or PartLimits.unlimited()
    T = batch.num_tables
    plans = plan_batch(batch, poolings, limits)
    groups = row_group_plans(batch, poolings, limits)           # backward by rows
    per = [{} for _ in range(T)]
    for m in MODES:
        _, table_counts = step_counts(plans, plans if m == "baseline" else groups, m, T)
        for t in range(T):
            per[t][m] = table_counts[t]
    total = {m: zero_counts() for m in MODES}
    for t in range(T):
        for m in MODES:
            total[m] = add_counts(total[m], per[t][m])

    def finish(per_mode, **extra):
        tree = by_mode(per_mode)
        out = {**extra,
               "lookups": tree["lookups"]["baseline"], "distinct_rows": tree["distinct_rows"]["baseline"],
               "bags": tree["bags"]["baseline"], "parts": tree["parts"]["baseline"],
               "forward": tree["forward"], "backward": tree["backward"], "update": tree["update"]}
        out["reduction"] = {
            phase: {what: {f"{a}/{b}": _ratio(out[phase][what][a], out[phase][what][b]) for a, b in RATIOS}
                    for (ph, what, _) in ROWS if ph == phase}
            for phase in ("forward", "backward", "update")}
        return out

    return {"batch_size": batch.batch_size, "num_tables": T, "poolings": list(poolings),
            "weighted": batch.weighted,
            "tables": [finish(per[t], table=t, pooling=poolings[t]) for t in range(T)],
            "total": finish(total)}


def _ratio(a, b):
    """a / b, or None when either needs none of that operation."""
    return None if a == 0 or b == 0 else round(a / b, 3)


def format_report(rep, title=""):
    lines = []
    head = f"{title}  " if title else ""
    lines.append(f"{head}B={rep['batch_size']}  T={rep['num_tables']}  "
                 f"pooling={','.join(sorted(set(rep['poolings'])))}  weighted={rep['weighted']}")
    blocks = [("total", rep["total"])] + ([(f"table {c['table']}", c) for c in rep["tables"]]
                                          if rep["num_tables"] > 1 else [])
    for name, c in blocks:
        lines.append("")
        lines.append(f"{name}: {c['lookups']} lookups, {c['distinct_rows']} distinct rows, "
                     f"{c['bags']} bags, {c['parts']} part(s)")
        ratio_names = [f"{a}/{b}" for a, b in RATIOS]
        lines.append(f"  {'':32}{'baseline':>10}{'dedup':>10}{'refree':>10}"
                     + "".join(f"{n:>17}" for n in ratio_names))
        for phase, what, label in ROWS:
            v = c[phase][what]
            red = c["reduction"][phase][what]
            lines.append(f"  {label:32}{v['baseline']:>10}{v['dedup']:>10}{v['refree']:>10}"
                         + "".join(f"{'-' if red[n] is None else f'{red[n]:.2f}x':>17}" for n in ratio_names))
    return "\n".join(lines)
