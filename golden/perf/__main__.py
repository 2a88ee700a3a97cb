"""``python -m refree.golden.perf [REPORT.json ...] [--dram-only]``: the performance model
(:mod:`.engine` on :mod:`.dram_side`) against each RTL job of a ``refree bench`` report: the
RTL's cycles, the model's and the error, then the largest and the mean error.  With
``--dram-only``: the DRAM side model's time for each job's traffic alone
(:mod:`.traffic`), how much of each job the DRAM side explains.  Default reports:
``reports/bench-b128/report.json`` (``make bench-dram``), ``reports/bench-b1024`` and
``reports/bench-adagrad`` (row-wise Adagrad's backward jobs), ``reports/bench-zipf`` and
``reports/bench-uniform``.
``--out FILE`` also writes the table (``reports/model-calibration.md``).  About two minutes."""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from refree.golden.traces import make_trace
from refree.hw.ddr4.params import DramParams
from .dram_side import serve
from .engine import job_cycles
from .traffic import job_requests

DEFAULT_REPORTS = [str(Path(__file__).resolve().parents[2] / "reports" / name / "report.json")
                   for name in ("bench-b128", "bench-b1024", "bench-adagrad", "bench-zipf", "bench-uniform")]


def _setup(record, dim, with_state=False):
    from refree.verif.staging import layout
    trace = make_trace(record["trace"], record["batch_size"], record["tables"], **dict(record.get("options") or {}))
    batch = trace.batch
    if record.get("index_dtype", "int64") != "int64":
        batch = batch.with_index_dtype(record["index_dtype"])
    params = DramParams(ranks=record["ranks"])
    tables = [np.zeros((n, dim), np.float32) for n in trace.num_rows]
    return batch, layout(batch, tables, with_state=with_state, stripe=params.mapping.staging_stripe), params


def calibration(records, limits, dram_only=False):
    """Per RTL job of ``records`` (a ``refree bench`` or ``refree sweep --kind rtl`` report's, on
    the default engine; SGD or row-wise Adagrad, whose record says ``optimizer``):
    ``{"trace", "batch_size", "ranks", "mode", "job", "rtl", "model"}``, ``model`` the model's cycles (or
    with ``dram_only`` the DRAM side's clocks for the job's traffic)."""
    out = []
    for r in records:
        if r.get("kind") != "rtl" or r.get("config"):
            continue            # (the default engine)
        dim, optimizer = r.get("dim", 64), r.get("optimizer", "sgd")
        batch, lay, params = _setup(r, dim, with_state=optimizer != "sgd")
        for mode, jobs in r["modes"].items():
            for job in ("forward", "backward") if optimizer == "sgd" else ("backward",):
                # (an Adagrad step's forward job is the SGD step's)
                if dram_only:
                    model = serve(job_requests(batch, lay, mode, job, limits), params).cycles
                else:
                    model = job_cycles(batch, lay, mode, job, limits, params, optimizer=optimizer)[0]
                opts = ", ".join(f"{k} {v}" for k, v in sorted((r.get("options") or {}).items()))
                out.append({"trace": r["trace"], "options": opts, "batch_size": r["batch_size"], "ranks": r["ranks"],
                            "mode": mode,
                            "optimizer": optimizer,
                            "job": job, "rtl": jobs[job]["counters"]["cycles"], "model": model})
    return out


def render(rows, what="model"):
    """The Markdown table of :func:`calibration`'s rows, and the largest and mean error."""
    out = [f"| trace | B | R | optimizer | mode | job | RTL cycles | {what} | {what} / RTL - 1 |",
           "|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        trace = f"{x['trace']} ({x['options']})" if x.get("options") else x["trace"]
        out.append(f"| {trace} | {x['batch_size']} | {x['ranks']} | {x['optimizer']} | {x['mode']} | "
                   f"{x['job']} | {x['rtl']:,} | {x['model']:,} | {x['model'] / x['rtl'] - 1:+.1%} |")
    if rows:
        errs = [abs(x["model"] / x["rtl"] - 1) for x in rows]
        out += ["", f"{len(rows)} jobs: largest error {max(errs):.1%}, mean {sum(errs) / len(errs):.1%}"]
    return "\n".join(out) + "\n"


def main(argv=None):
    from refree.gen.config import load_config
    from refree.verif.engine_run import limits_of
    ap = argparse.ArgumentParser(prog="python -m refree.golden.perf", description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="*", default=DEFAULT_REPORTS, metavar="REPORT.json")
    ap.add_argument("--dram-only", action="store_true", help="the DRAM side's time for each job's traffic alone")
    ap.add_argument("--out", metavar="FILE", help="also write the table there (Markdown), with the command")
    args = ap.parse_args(argv)
    if args.out and not Path(args.out).resolve().parent.is_dir():
        print(f"refree: error: --out {args.out}: no such folder", file=sys.stderr)
        return 2
    records = []
    for path in args.reports:
        try:
            records += json.loads(Path(path).read_text())["records"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"refree: error: cannot read the records of {path}: {e}", file=sys.stderr)
            return 2
    rows = calibration(records, limits_of(load_config(None).params), args.dram_only)
    table = render(rows, "DRAM side for its traffic" if args.dram_only else "model")
    print(table, end="")
    if args.out:
        cmd = "python -m refree.golden.perf " + " ".join(argv if argv is not None else sys.argv[1:])
        try:
            Path(args.out).write_text(f"# The performance model against the RTL\n\nMade by `{cmd}`: each RTL "
                                      f"job of the reports, its cycles and the model's (error = model / RTL - 1)."
                                      f"\n\n" + table)
        except OSError as e:
            print(f"refree: error: cannot write {args.out}: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
