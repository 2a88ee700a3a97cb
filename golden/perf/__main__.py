"""``python -m refree.golden.perf [REPORT.json]``: each RTL job of a ``refree bench`` report
beside the time the DRAM side model (:mod:`.dram_side`) needs for the job's traffic in the
engine's order (:mod:`.traffic`): how much of each job the DRAM side explains, and what is
left to the engine (its analysis, fold and updates, and what it does not overlap).  Default
report: ``reports/bench-b128/report.json`` (``make bench-dram``).  Seconds a job at B = 128."""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from refree.golden.traces import make_trace
from refree.hw.ddr4.params import DramParams
from .dram_side import serve
from .traffic import job_requests

DEFAULT_REPORT = Path(__file__).resolve().parents[2] / "reports" / "bench-b128" / "report.json"


def dram_times(record, limits, dim=64):
    """``{(mode, job): (rtl cycles, model clocks of the job's traffic)}`` of one RTL record."""
    from refree.verif.staging import layout
    options = dict(record.get("options") or {})
    trace = make_trace(record["trace"], record["batch_size"], record["tables"], **options)
    if record.get("index_dtype", "int64") != "int64":
        trace = type(trace)(trace.batch.with_index_dtype(record["index_dtype"]), trace.num_rows)
    params = DramParams(ranks=record["ranks"])
    tables = [np.zeros((n, dim), np.float32) for n in trace.num_rows]
    lay = layout(trace.batch, tables, stripe=params.mapping.staging_stripe)
    out = {}
    for mode, jobs in record["modes"].items():
        for job in ("forward", "backward"):
            reqs = job_requests(trace.batch, lay, mode, job, limits)
            out[mode, job] = (jobs[job]["counters"]["cycles"], serve(reqs, params).cycles)
    return out


def main(argv=None):
    from refree.gen.config import load_config
    from refree.verif.engine_run import limits_of
    ap = argparse.ArgumentParser(prog="python -m refree.golden.perf", description=__doc__.split("\n\n")[0])
    ap.add_argument("report", nargs="?", default=str(DEFAULT_REPORT))
    args = ap.parse_args(argv)
    try:
        records = [r for r in json.loads(Path(args.report).read_text())["records"] if r["kind"] == "rtl"]
    except (OSError, ValueError, KeyError) as e:
        print(f"refree: error: cannot read the RTL records of {args.report}: {e}", file=sys.stderr)
        return 2
    limits = limits_of(load_config(None).params)
    print("| trace | R | mode | job | RTL cycles | DRAM side for its traffic | RTL / DRAM side |")
    print("|---|---|---|---|---|---|---|")
    for r in records:
        if r.get("optimizer", "sgd") != "sgd" or r.get("config"):
            continue            # (the traffic leaves Adagrad's state out; the default limits)
        for (mode, job), (rtl, dram) in dram_times(r, limits, r.get("dim", 64)).items():
            print(f"| {r['trace']} | {r['ranks']} | {mode} | {job} | {rtl:,} | {dram:,} | {rtl / dram:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
