"""Bench reports of runs: Markdown + JSON + PNG plots (``refree bench --out``, ``refree sweep --out``).

A *record* is one run of one batch in the three modes, as plain data:

``{"kind", "trace", "options", "batch_size", "tables", "ranks", "index_dtype", "dim",
"optimizer", "modes": {mode: {"forward": job, "backward": job, "step": step}}}``

* ``kind == "rtl"``: the RTL of the whole chip, checked bit for bit against the golden model
  (:func:`refree.gen.rtl.rtl_check`); ``job`` and ``step`` are
  :func:`refree.gen.rtl.check_report`'s (cycles, counters, bounds, figures, energy);
* ``kind == "model"``: the bounds, and each job's cycles by the performance model
  (:mod:`refree.golden.perf.engine`, calibrated to the RTL): ``figures`` gain ``cycles``,
  ``cycles_over_roofline``, ``sampled`` (a sample of the job's parts, scaled), ``step`` its
  ``step`` cycles;
* ``kind == "bounds"``: the golden model's bounds only (:func:`refree.golden.roofline.step_bounds`,
  docs/design.md section 3), for batches no RTL simulation reaches: ``job`` holds ``bounds``
  and ``figures`` without cycles, ``step`` the step's roofline (``roofline_step``).  A bound
  is a lower bound on the cycles, not a prediction: the report says so wherever it shows one.

A step's time is its cycles (``rtl``, ``model``) or its roofline (``bounds``); a speed-up is
``baseline``'s over the mode's, on the same record (same batch, ranks and chip).

The anchors' published figures (:data:`ANCHORS`) are shown beside the measured ones, each
with its source; the report says by how much the design falls short of one it misses.
"""
import json
import os

from refree.golden.counts import MODES

from .rtl import over_baseline

__all__ = ["ANCHORS", "step_time", "speedups", "energy_saving", "write_report", "format_markdown", "PLOTS",
           "progress_bar", "prepare_dir"]

JOBS = ("forward", "backward")

#: Published figures (the papers' abstracts; their evaluation sections give no batch sizes,
#: ranks or baselines that this design could copy).
ANCHORS = [
    {"system": "ReFree", "source": "Liu et al., DAC 2024", "figure": "speed-up over state-of-the-art NMP",
     "value": 10.9, "unit": "x (up to)", "compare": "speedup"},
    {"system": "ReFree", "source": "Liu et al., DAC 2024", "figure": "energy, lower than state-of-the-art NMP",
     "value": 5.3, "unit": "x (average)", "compare": "energy"},
    {"system": "RecNMP", "source": "Ke et al., ISCA 2020 (arXiv 1912.12953)",
     "figure": "memory-latency speed-up (inference)", "value": 9.8, "unit": "x (up to)", "compare": None},
    {"system": "RecNMP", "source": "Ke et al., ISCA 2020 (arXiv 1912.12953)",
     "figure": "throughput (inference)", "value": 4.2, "unit": "x", "compare": None},
    {"system": "RecNMP", "source": "Ke et al., ISCA 2020 (arXiv 1912.12953)",
     "figure": "memory-energy saving", "value": 45.8, "unit": "%", "compare": None},
]


def step_time(record, mode):
    """The step's cycles (an RTL or model run) or its roofline (a bounds run); None without
    the mode."""
    s = record["modes"].get(mode, {}).get("step")
    if s is None:
        return None
    return s["roofline_step"] if record["kind"] == "bounds" else s["step"]


def speedups(record):
    """{mode: baseline's step time over the mode's} (empty without a baseline)."""
    return over_baseline({m: step_time(record, m) for m in record["modes"]})


def energy_saving(record):
    """{mode: baseline's step energy over the mode's} (RTL runs on DDR4 only)."""
    return over_baseline({m: v["step"].get("energy") for m, v in record["modes"].items()})


def _label(r):
    """A record's trace and everything else that tells it from its neighbours: the trace's
    options, a configuration's overrides, int32 input, Adagrad."""
    opts = [f"{k} {v}" for k, v in sorted(r.get("options", {}).items())]
    opts += [f"{k} {v}" for sec in r.get("config", {}).values() for k, v in sorted(sec.items())]
    opts += [x for x in (r.get("index_dtype"), r.get("optimizer")) if x not in (None, "int64", "sgd")]
    return f"{r['trace']}" + (f" ({', '.join(opts)})" if opts else "")


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _head(head):
    """A Markdown table's head line and its rule."""
    return [head, "|" + "---|" * (head.count("|") - 1)]


def _job_table(recs, head, cells):
    """A table of every job of ``recs``: the run's and the job's columns, then ``cells(job)``."""
    lines = _head("| trace | B | T | R | mode | job | " + head + " |")
    for r in recs:
        for m, v in r["modes"].items():
            for j in JOBS:
                lines.append(f"| {_label(r)} | {r['batch_size']} | {r['tables']} | {r['ranks']} | {m} | {j} | "
                             + " | ".join(cells(v[j])) + " |")
    return lines


def _bounds_cells(f):
    return [f"{f['memory']:,.0f}", f"{f['compute']:,.0f}", f"{f['analysis']:,.0f}"]


def _rtl_tables(recs):
    def cells(job):
        f, e = job["figures"], job.get("energy", {}).get("total")
        return [f"{f['cycles']:,d}", *_bounds_cells(f), f"{f['cycles_over_roofline']:.2f}", f["limit"],
                f"{f['moved_beats']:,d}", f"{f['compulsory_beats']:,d}", _fmt(f.get("bus_utilisation"), ".3f"),
                _fmt(None if e is None else e * 1e6, ",.2f")]
    return _job_table(recs, "cycles | memory | compute | analysis | cycles / roofline | bound | moved beats "
                            "| compulsory beats | bus | energy (uJ)", cells)


def _bounds_tables(recs):
    def cells(job):
        f = job["figures"]
        return [*_bounds_cells(f), f"{f['roofline']:,.0f}", f["limit"], f"{f['compulsory_beats']:,d}"]
    return _job_table(recs, "memory | compute | analysis | roofline | bound | compulsory beats", cells)


def _model_tables(recs):
    def cells(job):
        f = job["figures"]
        return [f"{f['cycles']:,d}", *_bounds_cells(f), _fmt(f["cycles_over_roofline"], ".2f"), f["limit"],
                f"{f['compulsory_beats']:,d}", "a sample, scaled" if f["sampled"] else "all"]
    return _job_table(recs, "model cycles | memory | compute | analysis | cycles / roofline | bound "
                            "| compulsory beats | parts run", cells)


def _step_table(recs, what):
    head = f"| trace | B | T | R | {' | '.join(MODES)} |"
    lines = _head(head)
    for r in recs:
        sp, es = speedups(r), energy_saving(r)
        cells = []
        for m in MODES:
            t = step_time(r, m)
            cell = "-" if t is None else f"{t:,.0f}" + (f" ({sp[m]:.2f}x)" if m in sp else "")
            if m in es and m != "baseline":
                cell += f", energy {es[m]:.2f}x less"
            cells.append(cell)
        lines.append(f"| {_label(r)} | {r['batch_size']} | {r['tables']} | {r['ranks']} | {' | '.join(cells)} |")
    return [f"Step ({what}) and its speed-up over `baseline` on the same batch, ranks and chip:", ""] + lines


def _anchor_lines(records):
    """The anchors, and this design's figure beside each one it can be compared with: its
    best speed-up beside an "up to", its mean energy saving beside an average."""
    rtl = [r for r in records if r["kind"] == "rtl"]
    speed = [(sp, r, m) for r in rtl for m, sp in speedups(r).items() if m != "baseline"]
    energy = [(e, r, m) for r in rtl for m, e in energy_saving(r).items() if m != "baseline"]
    lines = ["| system | figure | published | this design (RTL runs of this report; over its own `baseline`, "
             "a good NMP without reuse, not the paper's baseline) |", "|---|---|---|---|"]
    for a in ANCHORS:
        mine = "not comparable (another workload or metric)"
        found = {"speedup": speed, "energy": energy}.get(a["compare"]) if a["compare"] else None
        if a["compare"] and not found:
            mine = "no RTL run in this report"
        elif found and a["compare"] == "speedup":
            v, r, m = max(found, key=lambda x: x[0])
            where = f"`{m}`, {_label(r)}, B = {r['batch_size']}, R = {r['ranks']}"
            short = "" if v >= a["value"] else f"; {a['value'] / v:.2f}x short of the published figure"
            mine = f"best {v:.2f}x ({where}){short}"
        elif found:
            v = sum(x for x, _, _ in found) / len(found)
            short = "" if v >= a["value"] else f"; {a['value'] / v:.2f}x short of the published figure"
            mine = f"mean {v:.2f}x over the {len(found)} steps of `dedup` and `refree`{short}"
        lines.append(f"| {a['system']} ({a['source']}) | {a['figure']} | {a['value']} {a['unit']} | {mine} |")
    return lines


def format_markdown(records, title, command, peers=None, plots=(), failed=()):
    """The report's text (see the module docstring); ``failed``: lines naming the runs that
    failed (they have no record)."""
    rtl = [r for r in records if r["kind"] == "rtl"]
    bnd = [r for r in records if r["kind"] == "bounds"]
    mdl = [r for r in records if r["kind"] == "model"]
    out = [f"# {title}", "", "Made by:", "", "```", command, "```", ""]
    out += ["`baseline` is the design's own mode without reuse (PyTorch's order: a table-row read per "
            "lookup forward, a gradient-row read and a read-modify-write per lookup backward) on the same "
            "engine and ranks; `dedup` and `refree` are docs/design.md section 2's modes. Bounds: "
            "docs/design.md section 3 (memory, compute, analysis; the roofline is the largest).", ""]
    if rtl:
        out += ["## RTL runs", "", "Every run bit-identical to the golden model (pooled outputs, tables, "
                "optimizer states), counters equal to the golden counts, no DDR4 timing violation.", ""]
        out += _rtl_tables(rtl) + [""] + _step_table(rtl, "cycles") + [""]
    if mdl:
        out += ["## The performance model", "",
                "Cycles by the performance model (`golden/perf/`: the engine's phases on a clock-by-clock "
                "model of the DRAM side), not by the RTL. Its error against the RTL's cycles is measured by "
                "`python -m refree.golden.perf` on `make bench-dram`'s runs and stated in "
                "docs/golden-model.md; a job that walks more lookups than the model runs whole ran a sample "
                "of its parts, its cycles scaled by the lookups walked (\"a sample, scaled\"). Its energy is "
                "`golden/energy.py`'s of the model's cycles and DRAM commands (the host's programming of "
                "the job left out).", ""]
        out += _model_tables(mdl) + [""] + _step_table(mdl, "model cycles") + [""]
    if bnd:
        out += ["## Bounds (the golden model; no cycles)", "",
                "Nothing is simulated here: the figures are the jobs' bounds, lower bounds on the cycles, "
                "not predictions, for batches of any size (Meta's B = 65,536 and beyond). A speed-up here "
                "is the ratio of the modes' rooflines; the RTL's cycles are within their cycles / roofline "
                "of them (docs/history.md and the README give the RTL's figures).", ""]
        out += _bounds_tables(bnd) + [""] + _step_table(bnd, "its roofline, cycles") + [""]
    if peers:
        out += ["## Peers on this machine", "", "| peer | trace | B | optimizer | median ms a step | "
                "this design's `refree` step at its clock (ms; its first run of the batch, R ranks) |",
                "|---|---|---|---|---|---|"]
        for p in peers:
            out.append(f"| {p['peer']} | {p['trace']} | {p['batch_size']} | {p['optimizer']} | "
                       f"{p['median_ms']:.3f} | {_fmt(p.get('refree_ms'), '.3f')} (R = {p.get('ranks', '-')}) |")
        out.append("")
    if failed:
        out += ["## Runs that failed", ""] + [f"* {f}" for f in failed] + [""]
    out += ["## Published figures", ""] + _anchor_lines(records) + [""]
    if plots:
        out += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    return "\n".join(out)


# ---- plots ------------------------------------------------------------------------------

def _series(records, key, group):
    """{group value: [(x, {mode: speed-up})]} over the records whose ``key`` varies."""
    out = {}
    for r in records:
        sp = speedups(r)
        if sp:
            out.setdefault(group(r), []).append((key(r), sp))
    return {g: sorted(v, key=lambda p: p[0]) for g, v in out.items() if len({x for x, _ in v}) > 1}


def _speedup_plot(plt, series, xlabel, title, path, logx=False):
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for g, pts in series.items():
        for m, style in (("dedup", "--o"), ("refree", "-s")):
            xs = [x for x, sp in pts if m in sp]
            ax.plot(xs, [sp[m] for x, sp in pts if m in sp], style, label=f"{m}, {g}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("step speed-up over baseline")
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _stacked_plot(plt, bars, parts, ylabel, title, path):
    """bars: [(label, {part: value})] stacked by ``parts``."""
    fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * len(bars) + 2), 4.2))
    bottom = [0.0] * len(bars)
    for part in parts:
        vals = [b.get(part, 0.0) for _, b in bars]
        ax.bar(range(len(bars)), vals, bottom=bottom, label=part)
        bottom = [x + y for x, y in zip(bottom, vals)]
    ax.set_xticks(range(len(bars)), [lab for lab, _ in bars], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PHASES = ("cycles_check", "cycles_analysis", "cycles_stream", "cycles_drain")
ENERGY_PARTS = {"DRAM ACT+PRE": ("dram", "act_pre"), "DRAM RD": ("dram", "rd"), "DRAM WR": ("dram", "wr"),
                "DRAM REF": ("dram", "ref"), "DRAM background": ("dram", "background"),
                "fp32 add": ("logic", "fp_add"), "fp32 multiply": ("logic", "fp_mul"), "SRAM": ("sram",)}


def _energy_part(e, path):
    for k in path:
        e = e[k]
    return e


#: plot file -> what it shows (each is drawn only when the records vary along its axis)
PLOTS = {"speedup_vs_ranks.png": "step speed-up against ranks",
         "speedup_vs_batch.png": "step speed-up against batch size",
         "speedup_vs_skew.png": "step speed-up against the Zipf exponent",
         "time_per_phase.png": "RTL cycles per phase of each job",
         "energy_per_component.png": "RTL step energy per component"}


def draw_plots(records, out_dir):
    """Draw the plots the records support into ``out_dir``; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    drawn = []
    kind = lambda r: {"rtl": "cycles", "model": "model cycles"}.get(r["kind"], "rooflines")
    by_ranks = _series(records, lambda r: r["ranks"],
                       lambda r: f"{_label(r)} B={r['batch_size']} T={r['tables']} ({kind(r)})")
    if by_ranks:
        _speedup_plot(plt, by_ranks, "ranks R", "speed-up against ranks", os.path.join(out_dir, "speedup_vs_ranks.png"))
        drawn.append("speedup_vs_ranks.png")
    by_batch = _series(records, lambda r: r["batch_size"],
                       lambda r: f"{_label(r)} T={r['tables']} R={r['ranks']} ({kind(r)})")
    if by_batch:
        _speedup_plot(plt, by_batch, "batch size B", "speed-up against batch size",
                      os.path.join(out_dir, "speedup_vs_batch.png"), logx=True)
        drawn.append("speedup_vs_batch.png")
    zipf = [r for r in records if r["trace"] == "zipf" and "alpha" in r.get("options", {})]
    by_skew = _series(zipf, lambda r: r["options"]["alpha"],
                      lambda r: f"{_label(dict(r, options={k: v for k, v in r['options'].items() if k != 'alpha'}))} "
                                f"B={r['batch_size']} T={r['tables']} R={r['ranks']} ({kind(r)})")
    if by_skew:
        _speedup_plot(plt, by_skew, "Zipf exponent alpha", "speed-up against skew",
                      os.path.join(out_dir, "speedup_vs_skew.png"))
        drawn.append("speedup_vs_skew.png")
    rtl = [r for r in records if r["kind"] == "rtl"]
    name = lambda r, m: f"{r['trace']} B{r['batch_size']} R{r['ranks']} {m}"
    if rtl:
        bars = [(name(r, m), {f"{j} {p[7:]}": v[j]["counters"][p] for j in JOBS for p in PHASES})
                for r in rtl for m, v in r["modes"].items()]
        _stacked_plot(plt, bars, [f"{j} {p[7:]}" for j in JOBS for p in PHASES], "cycles",
                      "RTL cycles per phase (forward, then backward)", os.path.join(out_dir, "time_per_phase.png"))
        drawn.append("time_per_phase.png")
    with_energy = [(r, m, v) for r in rtl for m, v in r["modes"].items() if "energy" in v["forward"]]
    if with_energy:
        bars = [(name(r, m), {p: sum(_energy_part(v[j]["energy"], path) for j in JOBS) * 1e6
                              for p, path in ENERGY_PARTS.items()}) for r, m, v in with_energy]
        _stacked_plot(plt, bars, list(ENERGY_PARTS), "uJ per step", "RTL step energy per component "
                      "(refree.golden.energy; I/O and termination excluded)",
                      os.path.join(out_dir, "energy_per_component.png"))
        drawn.append("energy_per_component.png")
    return drawn


def progress_bar(total):
    """A progress bar on stderr (tqdm), as a callable taking the runs done so far."""
    import sys

    from tqdm import tqdm
    bar = tqdm(total=total, unit="run", file=sys.stderr, disable=None)

    def update(done):
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return update


def prepare_dir(option, path):
    """Create the output folder ``path`` (of ``option``) now, before any run, or raise
    BatchError naming it."""
    from refree.golden.errors import BatchError
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise BatchError(option, f"cannot create {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise BatchError(option, f"cannot write into {path}")


def write_report(records, out_dir, title, command, peers=None, failed=()):
    """Write ``report.md``, ``report.json`` and the plots into ``out_dir`` (created)."""
    prepare_dir("--out", out_dir)
    plots = draw_plots(records, out_dir)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump({"title": title, "command": command, "records": records, "peers": peers or [],
                   "anchors": ANCHORS, "plots": plots, "failed": list(failed)}, f, indent=1)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(format_markdown(records, title, command, peers, plots, failed))
    return plots
