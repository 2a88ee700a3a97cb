"""Runs: one batch in the three modes, on the RTL, by the performance model or by the golden
model's bounds, as a record.

A *point* names a run completely, as plain data (so that it can be shipped to a Dask worker
and hashed into a cache key, :mod:`refree.gen.sweep`):

``{"kind": "rtl" | "model" | "bounds", "trace": name, "options": {...}, "batch_size": B, "tables": T,
"ranks": R, "index_dtype": "int64" | "int32", "optimizer": "sgd" | "rowwise-adagrad",
"config": {section: {key: value}}}``

``options`` are the trace's (:func:`refree.golden.traces.make_trace`: MovieLens'
``batch_index``, the synthetic traces' ``seed``, Zipf's ``alpha``); ``config`` overrides the
generator's defaults as a configuration file would (:func:`refree.gen.config.load_config`),
``[dram] ranks`` excepted, which is ``ranks``.  A run returns a record
(:mod:`refree.gen.bench_report`): ``rtl`` runs :func:`refree.gen.rtl.rtl_check` (every
output checked bit for bit against the golden model; an AssertionError on a difference),
``bounds`` the jobs' bounds of docs/design.md section 3 (:func:`refree.golden.roofline.step_bounds`)
without simulating anything: what reaches Meta's batch sizes; ``model`` the bounds and each
job's cycles by the performance model (:mod:`refree.golden.perf.engine`, calibrated to the RTL:
``python -m refree.golden.perf``), each job running every part when it walks at most
:data:`MODEL_LOOKUPS` lookups, else a sample of its parts scaled (``figures.sampled``).
"""
from dataclasses import replace

from refree.golden.counts import MODES
from refree.golden.roofline import step_bounds
from refree.golden.traces import Trace, make_trace

from .config import load_config

__all__ = ["KINDS", "int_list", "trace_options", "point", "point_config", "check_points", "point_trace", "run_point",
           "check_modelled"]

KINDS = ("rtl", "model", "bounds")
#: A model run's job runs whole up to this many lookups walked (about a minute a job at most
#: on this machine), else a sample of its parts (refree.golden.perf.engine.job_cycles).
MODEL_LOOKUPS = 40_000


def int_list(option, text, allowed=None, empty=False):
    """Comma-separated positive integers (of ``allowed``), as the command line's list
    options take them; none only when ``empty``.  ValueError names the option."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{option}: comma-separated integers, not {text!r}") from None
    if not values and not empty:
        raise ValueError(f"{option}: give at least one value")
    for v in values:
        if v < 1 or allowed and v not in allowed:
            raise ValueError(f"{option}: {v} is not " + (f"one of {allowed}" if allowed else "positive"))
    return values


def trace_options(trace, batch_index=0, seed=0, alpha=None):
    """A point's ``options`` for ``trace``: MovieLens takes a window (``batch_index``), the
    synthetic traces a ``seed`` (and Zipf its ``alpha``, when given)."""
    if trace == "movielens":
        return {"batch_index": batch_index}
    return {"seed": seed, **({"alpha": alpha} if alpha is not None else {})}


def point(kind, trace, batch_size, *, tables=1, ranks=1, options=None, index_dtype="int64", optimizer="sgd",
          config=None):
    """A point with every field present (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return {"kind": kind, "trace": trace, "options": dict(options or {}), "batch_size": batch_size,
            "tables": tables, "ranks": ranks, "index_dtype": index_dtype, "optimizer": optimizer,
            "config": {s: dict(v) for s, v in (config or {}).items()}}


def point_config(p):
    """The point's generator configuration (its overrides, its ranks)."""
    conf = load_config(None, p["config"])
    conf = replace(conf, dram=replace(conf.dram, ranks=p["ranks"]))
    conf.window_params()
    if not 1 <= p["tables"] <= conf.max_tables:
        raise ValueError(f"{p['tables']} tables: the chip holds 1 to {conf.max_tables} (engine.max_tables)")
    return conf


def check_points(points):
    """Every point's configuration, before the first run: a ValueError names the first bad
    one."""
    for p in points:
        point_config(p)


def point_trace(p):
    """The point's trace (:class:`refree.golden.traces.Trace`), in its index width."""
    tr = make_trace(p["trace"], p["batch_size"], p["tables"], **p["options"])
    if p["index_dtype"] == "int64":
        return tr
    return Trace(tr.batch.with_index_dtype(p["index_dtype"]), tr.num_rows)


def _header(p, conf):
    return {k: p[k] for k in ("kind", "trace", "options", "batch_size", "tables", "ranks", "index_dtype",
                              "optimizer", "config")} | {"dim": conf.dim}


def _bounds_record(p, conf, tr):
    from refree.hw.engine.datapath import lanes_for
    from refree.verif.engine_run import limits_of
    modes = MODES if p["optimizer"] == "sgd" else tuple(m for m in MODES if m != "baseline")
    bounds = step_bounds(tr.batch, ["sum"] * tr.batch.num_tables, limits_of(conf.params), conf.dim, p["ranks"],
                         p["optimizer"], modes, adagrad_lanes=conf.adagrad_lanes, div_lanes=conf.div_lanes,
                         fold_lanes=lanes_for(conf.dim, conf.fold_lanes))
    out = {}
    for m, jobs in bounds.items():
        out[m] = {j: {"bounds": b, "figures": {"compulsory_beats": b["beats"]["total"], "memory": b["memory"],
                                               "compute": b["compute"], "analysis": b["analysis"],
                                               "roofline": b["roofline"], "limit": b["limit"]}}
                  for j, b in jobs.items()}
        out[m]["step"] = {"roofline_step": jobs["forward"]["roofline"] + jobs["backward"]["roofline"]}
    return out


def check_modelled(sections, conf):
    """The performance model models the default engine: of a configuration (``sections``:
    those it sets) only the part limits (``[parts]``) may change; else ValueError."""
    if set(sections) - {"parts"} or conf.dim != 64 or conf.fold_lanes != 64:
        raise ValueError("the performance model models the default engine (D = 64, 64 fold lanes): "
                         "only [parts] limits may change")


def _model_record(p, conf, tr):
    """The bounds record with each job by the performance model: ``figures`` gain ``cycles``,
    ``cycles_over_roofline``, ``sampled`` and ``phases``; each job its ``energy``
    (:func:`refree.golden.energy.job_energy` of the model's cycles and DRAM commands and the
    golden counts' operations and the job's table beats), ``step`` its ``step`` cycles and
    ``energy``."""
    from refree.golden.energy import job_energy, row_store_bytes
    from refree.golden.model import plan_batch, row_group_plans, step_counts
    from refree.golden.perf.engine import job_cycles
    from refree.verif.engine_run import limits_of
    from refree.verif.staging import TableShape, layout
    check_modelled(p["config"], conf)
    rec = _bounds_record(p, conf, tr)
    params, batch = conf.dram, tr.batch
    lay = layout(batch, [TableShape(n, conf.dim) for n in tr.num_rows], with_state=p["optimizer"] != "sgd",
                 stripe=params.mapping.staging_stripe)
    limits = limits_of(conf.params)
    poolings = ["sum"] * batch.num_tables
    plans = plan_batch(batch, poolings, limits)
    by_rows = row_group_plans(batch, poolings, limits)
    for mode, jobs in rec.items():
        counts = step_counts(plans, plans if mode == "baseline" else by_rows, mode, batch.num_tables)[0]
        for job in ("forward", "backward"):
            run = job_cycles(batch, lay, mode, job, limits, params, max_lookups=MODEL_LOOKUPS,
                             optimizer=p["optimizer"])
            f = jobs[job]["figures"]
            f.update(cycles=run.cycles, cycles_over_roofline=run.cycles / f["roofline"] if f["roofline"] else None,
                     sampled=run.sampled, phases=run.phases)
            beats = jobs[job]["bounds"]["beats"]
            jobs[job]["energy"] = job_energy(
                {**run.commands, "cycles": run.cycles, "adds": counts[job]["adds"], "muls": counts[job]["muls"],
                 "table_reads": beats["table_reads"], "table_writes": beats["table_writes"], "state_writes": beats["state_writes"]},
                ranks=p["ranks"], dim=conf.dim, sram_bytes=row_store_bytes(conf.params, conf.dim),
                lookups=len(batch.indices), grade=params.grade)
        jobs["step"].update(step=jobs["forward"]["figures"]["cycles"] + jobs["backward"]["figures"]["cycles"],
                            energy=jobs["forward"]["energy"]["total"] + jobs["backward"]["energy"]["total"])
    return rec


def run_point(p, out=lambda s: None):
    """The point's record (see the module docstring); ``out`` takes the RTL run's lines."""
    conf = point_config(p)
    tr = point_trace(p)
    if p["kind"] == "bounds":
        modes = _bounds_record(p, conf, tr)
    elif p["kind"] == "model":
        modes = _model_record(p, conf, tr)
    else:
        from .rtl import check_report, rtl_check
        per_mode = rtl_check(tr.batch, tr.num_rows, conf, out=out, optimizer=p["optimizer"])
        modes = check_report(per_mode, p["ranks"])
    return _header(p, conf) | {"modes": modes}
