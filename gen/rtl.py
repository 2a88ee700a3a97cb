"""Training steps on the engine's generated Verilog, from the command line.

``refree step --engine rtl`` and the main job (``refree rtl-check``) run here: the engine
of the generator configuration (``--config``, default ``gen/default_config.toml``) is
converted to Verilog and built once per configuration and simulator (under ``build/``),
then driven by the cocotb testbench of :mod:`refree.verif.engine_run`.

Tables whose vector length D is not a multiple of 16 run on an engine of the next multiple
(rows are padded to whole 64-byte beats in memory anyway): the extra lanes hold +0 in the
table and the gradient, so they stay +0 and the real lanes are unaffected.
"""
import os
import shutil

import numpy as np

from refree.golden.errors import BatchError, ErrorCode
from refree.golden.model import StepResult, check_step_inputs, initial_state, step
from refree.golden.counts import MODES
from refree.golden.energy import job_energy, row_store_bytes
from refree.golden.roofline import efficiency, step_bounds

__all__ = ["rtl_step", "rtl_check", "COUNTER_ROWS", "dram_figures", "job_figures", "rtl_job_energy",
           "format_counters", "step_summary", "format_step_summary", "check_report"]

# (job, counter, what it counts) in the order the main job prints them
COUNTER_ROWS = [
    ("forward", "cycles", "cycles"),
    ("forward", "cycles_check", "  checking the batch"),
    ("forward", "cycles_analysis", "  forming parts, analysis"),
    ("forward", "cycles_stream", "  streaming rows, folding"),
    ("forward", "cycles_drain", "  draining results"),
    ("forward", "input_reads", "input beats read (offsets, indices, weights)"),
    ("forward", "table_reads", "table beats read"),
    ("forward", "pooled_writes", "pooled beats written"),
    ("forward", "adds", "additions"),
    ("forward", "muls", "multiplies"),
    ("backward", "cycles", "cycles"),
    ("backward", "cycles_check", "  checking the batch"),
    ("backward", "cycles_analysis", "  passes over the input, analysis"),
    ("backward", "cycles_stream", "  streaming rows, merging, updating"),
    ("backward", "cycles_drain", "  draining updates"),
    ("backward", "input_reads", "input beats read (offsets, indices, weights)"),
    ("backward", "grad_reads", "gradient beats read"),
    ("backward", "table_reads", "table beats read"),
    ("backward", "table_writes", "table beats written"),
    ("backward", "state_reads", "optimizer state beats read"),
    ("backward", "state_writes", "optimizer state beats written"),
    ("backward", "adds", "additions (merge)"),
    ("backward", "muls", "multiplies (merge)"),
    ("backward", "distinct_rows", "distinct rows"),
    ("backward", "parts", "passes (row groups; baseline: parts)"),
]


MEMORIES = ("ddr4", "port")


def _runner(conf, dim, sim, memory, waves=False):
    from refree.verif.engine_run import EngineRunner
    ddr4 = memory == "ddr4"
    return EngineRunner(conf.params, dim, conf.max_tables, conf.addr_bits, sim, conf.div_lanes,
                        conf.adagrad_lanes, fold_lanes=conf.fold_lanes, dram=conf.dram if ddr4 else None,
                        window=conf.window_params() if ddr4 else None, waves=waves,
                        hot=conf.hot if ddr4 else None, stale=conf.slipstream)


def rtl_step(tables, batch, grad, lr, mode, conf, sim="verilator", poolings=None, optimizer="sgd",
             eps=1e-8, state=None, memory="ddr4", host_io=False, waves=None, hot_rows=None, stale=None):
    """One step on the RTL; returns (StepResult, {"forward": counters, "backward": counters}).
    ``hot_rows`` (per table an array of rows; a chip with a hot-row store): loaded into the
    store before the step, flushed after it (``EngineRunner.step``).
    ``host_io``: on the buffer chip, load through the host's DDR4 writes and take the
    outputs from its reads (else the DRAM models are preloaded, a simulator backdoor).
    ``waves``: a path, where the step's every signal is written (VCD under Verilator, FST
    under Icarus; a simulator build of its own).  ``stale`` (per table a boolean per row,
    Slipstream's stale rows; a configuration with ``[slipstream] entries``): the backward
    job skips the rows that the engine's set holds (the counters' ``"stale_rows"``).
    """
    poolings = check_step_inputs(tables, batch, grad, lr, poolings, mode, optimizer, eps)
    if optimizer == "rowwise-adagrad" and tables[0].shape[1] % 16:
        # (the engine's rows are whole beats; Adagrad's mean of squares divides by the padded D)
        raise BatchError("--optimizer", f"row-wise Adagrad on the RTL needs a vector length that is a "
                         f"multiple of 16, not {tables[0].shape[1]}")
    state = initial_state(tables, optimizer, state)
    if len(tables) > conf.max_tables:
        raise BatchError("--table", f"has {len(tables)} tables; the engine is configured for at most "
                         f"{conf.max_tables} (engine.max_tables)")
    B, T, D = batch.batch_size, len(tables), tables[0].shape[1]
    dim = -(-D // 16) * 16
    padded = [np.pad(E, ((0, 0), (0, dim - D))) for E in tables]
    g = np.pad(grad.reshape(B, T, D), ((0, 0), (0, 0), (0, dim - D))).reshape(B, T * dim)
    out = _runner(conf, dim, sim, memory, waves=waves is not None).step(
        padded, batch, g, lr, mode, poolings=poolings, optimizer=optimizer, eps=eps, state=state, host_io=host_io,
        hot_rows=hot_rows, stale=stale)
    if waves is not None:
        shutil.move(out.run.waves, waves)
    if out.error:
        raise BatchError("batch", f"the engine stopped with error {ErrorCode(out.error).name}",
                         ErrorCode(out.error))
    pooled = np.ascontiguousarray(out.pooled.reshape(B, T, dim)[:, :, :D].reshape(B, T * D))
    new = [np.ascontiguousarray(E[:, :D]) for E in out.tables]
    return StepResult(pooled, new, out.state, {}, []), out.counters


def rtl_check(batch, num_rows, conf, sim="verilator", lr=0.01, seed=0, out=print, optimizer="sgd",
              memory="ddr4", host_io=False, waves=None, hot_rows=None):
    """The main job: one step per mode on the RTL and on the golden model; every output
    (pooled, tables, Adagrad states) compared bit for bit and the counters against the
    golden counts.  Returns the RTL counters per mode: ``{mode: {"forward": counters,
    "backward": counters, "dram": ..., "bounds": {"forward": b, "backward": b}}}``, ``bounds``
    being each job's bounds (:func:`refree.golden.roofline.step_bounds`: on DDR4 at the
    configuration's ranks, on the generic port at its peak of a beat a cycle); on DDR4 also
    ``"energy": {"forward": e, "backward": e}`` (:func:`rtl_job_energy`); raises
    AssertionError on any difference.  ``waves`` (a path ``DIR/NAME.EXT``): each mode's step's
    signals are written to ``DIR/NAME-MODE.EXT`` (VCD under Verilator, FST under Icarus).

    ``hot_rows`` (FAE's hot set, per table an array of rows; a chip with a hot-row store):
    each step runs between a load of the rows the store holds and a flush; its outputs are
    the golden model's as without the store, and the store's hits, loads and write-backs
    the golden model's (``golden.hot_rows.table_traffic``); ``per_mode[mode]["hot"]`` holds
    them."""
    from refree.hw.engine.datapath import lanes_for
    from refree.verif.engine_run import limits_of
    rng = np.random.default_rng(seed)
    D = conf.dim
    tables = [(0.1 * rng.standard_normal((n, D))).astype(np.float32) for n in num_rows]
    grad = (0.1 * rng.standard_normal((batch.batch_size, len(tables) * D))).astype(np.float32)
    limits = limits_of(conf.params)
    runner = _runner(conf, D, sim, memory, waves=waves is not None)
    build = runner.build()
    out(f"design: {runner.design.verilog} ({sim} build in {build.directory})")
    if memory == "ddr4":
        out("on the buffer chip LrdimmNmp: a host DDR4 driver programs each job through the NMP "
            "window and reads the counters back; " + (
                "it loads the batch, the tables and the upstream gradient through ordinary DDR4 "
                "writes and reads the results back through ordinary reads" if host_io else
                "the batch, the tables and the upstream gradient are preloaded into the DRAM "
                "models through the simulator backdoor (--host-io: through the host's writes)"))
    beats = D // 16
    bounds = step_bounds(batch, ["sum"] * batch.num_tables, limits, D, conf.dram.ranks, optimizer,
                         adagrad_lanes=conf.adagrad_lanes, div_lanes=conf.div_lanes,
                         fold_lanes=lanes_for(D, conf.fold_lanes),
                         beats_per_cycle=None if memory == "ddr4" else 1.0)
    per_mode = {}
    for mode in MODES if optimizer == "sgd" else [m for m in MODES if m != "baseline"]:
        want = step(tables, batch, grad, lr, mode=mode, limits=limits, optimizer=optimizer)
        got, counters = rtl_step(tables, batch, grad, lr, mode, conf, sim, optimizer=optimizer,
                                 memory=memory, host_io=host_io, waves=waves_of(waves, mode), hot_rows=hot_rows)
        same = np.array_equal(got.pooled.view(np.uint32), want.pooled.view(np.uint32)) and all(
            np.array_equal(a.view(np.uint32), b.view(np.uint32))
            for a, b in zip(got.tables + (got.state or []), want.tables + (want.state or [])))
        c, f, b = want.counts, counters["forward"], counters["backward"]
        counts_equal = (f["table_reads"] == c["forward"]["reads"] * beats and f["adds"] == c["forward"]["adds"]
                        and f["muls"] == c["forward"]["muls"] and b["grad_reads"] == c["backward"]["reads"] * beats
                        and b["adds"] == c["backward"]["adds"] and b["muls"] == c["backward"]["muls"]
                        and b["table_writes"] == c["update"]["rmw"] * beats and f["parts"] == c["parts"]
                        and b["parts"] == (c["parts"] if want.row_groups is None else sum(want.row_groups))
                        and b["state_writes"] == (c["update"]["rmw"] if want.state else 0))
        out(f"{mode:8s}: pooled outputs and tables bit-identical to the golden model: "
            f"{'yes' if same else 'NO'}; counters equal the golden counts: {'yes' if counts_equal else 'NO'}")
        assert same and counts_equal, f"{mode}: the RTL and the golden model differ"
        per_mode[mode] = {**counters, "bounds": bounds[mode]}
        if hot_rows is not None:
            per_mode[mode]["hot"] = _check_hot_store(counters, batch, mode, limits, beats, D, out)
        if memory == "ddr4":
            per_mode[mode]["energy"] = {
                j: rtl_job_energy(counters[j], counters["dram"][j], conf.dram.ranks, D, len(batch.indices),
                                  conf.dram.grade, row_store_bytes(conf.params, D))
                for j in ("forward", "backward")}
    return per_mode


def _check_hot_store(counters, batch, mode, limits, beats, dim, out):
    """A step between a hot-row store's load and flush: its hits, loads and write-backs
    against the golden model's (``table_traffic``, in rows of ``beats`` beats), and the
    step's DRAM beats fewer by its hits.  Returns the figures."""
    from refree.golden.hot_rows import HotSet, table_traffic
    kept = tuple(np.sort(rows) for rows in counters["hot_rows"])       # (a HotSet's rows ascend)
    want = table_traffic([batch], HotSet(kept, sum(map(len, kept)) * 4 * dim, dim), mode, limits)
    load, fwd, bwd, flush = (counters[j] for j in ("hot load", "forward", "backward", "hot flush"))
    hits = sum(bwd[k] - load[k] for k in ("hot_read_hits", "hot_write_hits"))
    dram = sum(r["reads"] + r["writes"] for j in ("forward", "backward") for r in counters["dram"][j])
    fig = {"rows": sum(map(len, kept)), "loaded": load["hot_loaded"], "hits": hits,
           "written_back": flush["hot_written_back"], "dram": dram}
    out(f"{mode:8s}: hot-row store: {fig['rows']:,} rows ({fig['loaded']:,} beats) loaded, {hits:,} of the step's "
        f"table beats served on chip, {dram:,} DRAM beats left, {fig['written_back']:,} written back by the flush")
    assert (fig["loaded"], hits, fig["written_back"]) == (want["load"] * beats, want["hits"] * beats,
                                                         want["flush"] * beats), \
        f"{mode}: the hot-row store's loads, hits and write-backs differ from the golden model's {want}"
    assert dram + hits == moved_beats(fwd) + moved_beats(bwd), \
        f"{mode}: the step's DRAM beats and the store's hits do not add up to the engine's traffic"
    return fig


def waves_of(waves, mode):
    """``DIR/NAME.EXT`` -> ``DIR/NAME-MODE.EXT`` (None stays None)."""
    if waves is None:
        return None
    stem, ext = os.path.splitext(waves)
    return f"{stem}-{mode}{ext}"


BEATS_READ = ("input_reads", "table_reads", "grad_reads", "state_reads")
BEATS_WRITTEN = ("table_writes", "pooled_writes", "state_writes")


def moved_beats(job):
    """Every beat a job moved, by its counters (staging included)."""
    return sum(job[k] for k in BEATS_READ + BEATS_WRITTEN)


def dram_figures(job, ranks, per_rank):
    """DDR4 figures of one job: the beats it moved (its counters), the data buses'
    utilisation (busy clocks / R x cycles), and the ranks' ACTs, row hits and REFs.  (Its
    bounds are :func:`job_figures`'s.)"""
    busy = sum(r["data_bus_busy_cycles"] for r in per_rank)
    return {"beats": moved_beats(job),
            "bus_utilisation": busy / (ranks * job["cycles"]) if job["cycles"] else 0.0,
            "activates": sum(r["activates"] for r in per_rank),
            "row_hits": sum(r["row_hits"] for r in per_rank),
            "refreshes": sum(r["refreshes"] for r in per_rank)}


def rtl_job_energy(job, per_rank, ranks, dim, lookups, grade, sram_bytes):
    """One DDR4 job's energy (:func:`refree.golden.energy.job_energy`) from the engine's
    counters and the ranks' command counts (summed over the ranks)."""
    commands = {k: sum(r[k] for r in per_rank) for k in ("reads", "writes", "activates", "refreshes")}
    return job_energy({**job, **commands}, ranks=ranks, dim=dim, sram_bytes=sram_bytes, lookups=lookups,
                      grade=grade)


def job_figures(job, bounds, ranks=None, per_rank=None):
    """One job's figures against its bounds (:mod:`refree.golden.roofline`, docs/design.md section
    3): compulsory and moved beats, the memory, compute and analysis bounds, the roofline,
    cycles / roofline and the bound at the roofline (``limit``); on DDR4 (``ranks``,
    ``per_rank``) also :func:`dram_figures`."""
    figs = {"compulsory_beats": bounds["beats"]["total"], "moved_beats": moved_beats(job),
            "memory": bounds["memory"], "compute": bounds["compute"], "analysis": bounds["analysis"],
            "roofline": bounds["roofline"], "limit": bounds["limit"], "cycles": job["cycles"],
            "cycles_over_roofline": efficiency(job["cycles"], bounds)}
    if ranks:
        d = dram_figures(job, ranks, per_rank)
        figs.update(bus_utilisation=d["bus_utilisation"], activates=d["activates"], row_hits=d["row_hits"],
                    refreshes=d["refreshes"])
    return figs


BOUND_ROWS = [("compulsory_beats", "compulsory beats (64 B; docs/design.md sec. 3)", "d"),
              ("moved_beats", "beats moved (the counters)", "d"),
              ("memory", "memory bound (cycles)", ".0f"), ("compute", "compute bound (cycles)", ".0f"),
              ("analysis", "analysis bound (cycles)", ".0f"), ("roofline", "roofline (the largest)", ".0f"),
              ("limit", "  which bound", "s"), ("cycles_over_roofline", "cycles / roofline", ".2f")]
DRAM_ROWS = [("bus_utilisation", "data-bus utilisation", ".3f"), ("activates", "ACTs", "d"),
             ("row_hits", "row hits", "d"), ("refreshes", "REFs", "d")]
# (path into refree.golden.energy.job_energy's breakdown, label, scale): nJ but per lookup
ENERGY_ROWS = [(("total",), "energy (nJ; refree.golden.energy)", 1e9),
               (("dram", "act_pre"), "  DRAM ACT+PRE", 1e9), (("dram", "rd"), "  DRAM RD bursts", 1e9),
               (("dram", "wr"), "  DRAM WR bursts", 1e9), (("dram", "ref"), "  DRAM REFs", 1e9),
               (("dram", "background"), "  DRAM background (active standby)", 1e9),
               (("logic", "fp_add"), "  fp32 additions (an FMA: add + multiply)", 1e9),
               (("logic", "fp_mul"), "  fp32 multiplies", 1e9),
               (("sram",), "  SRAM (row store, partial sums)", 1e9),
               (("pj_per_lookup",), "energy per lookup (pJ)", 1)]


def _energy_cell(energy, path, scale):
    for k in path:
        energy = energy[k]
    return f"{'-':>12s}" if energy is None else f"{energy * scale:>12,.1f}"


def format_counters(per_mode, ranks=None):
    """The counters of each mode side by side, and each job's figures against its bounds
    (:func:`job_figures`, when ``per_mode[mode]["bounds"]`` holds them: :func:`rtl_check`);
    with ``ranks`` (a DDR4 run) also the DRAM figures of each job, and its energy when
    ``per_mode[mode]["energy"]`` holds it (:func:`rtl_check`)."""
    head = f"{'':44s}" + "".join(f"{m:>12s}" for m in per_mode)
    lines = [head]
    for j in ("forward", "backward"):
        lines.append(f"{j} job")
        for jj, name, label in COUNTER_ROWS:
            if jj == j:
                lines.append(f"  {label:42s}" + "".join(f"{per_mode[m][j][name]:12d}" for m in per_mode))
        has_bounds = all("bounds" in per_mode[m] for m in per_mode)
        rows = (BOUND_ROWS if has_bounds else []) + (DRAM_ROWS if ranks else [])
        if rows:
            figs = {m: job_figures(per_mode[m][j], per_mode[m]["bounds"][j], ranks,
                                   per_mode[m]["dram"][j] if ranks else None) if has_bounds
                    else dram_figures(per_mode[m][j], ranks, per_mode[m]["dram"][j]) for m in per_mode}
            for key, label, fmt in rows:
                lines.append(f"  {label:42s}" + "".join(f"{figs[m][key]:>12{fmt}}" for m in per_mode))
        if all("energy" in per_mode[m] for m in per_mode):
            for path, label, scale in ENERGY_ROWS:
                lines.append(f"  {label:42s}" + "".join(_energy_cell(per_mode[m]["energy"][j], path, scale)
                                                       for m in per_mode))
    return "\n".join(lines)


def over_baseline(per_mode):
    """{mode: baseline's value over the mode's} for per-mode step times or energies (the
    speed-up, the energy saving); empty without a baseline, a mode without a value left out."""
    base = per_mode.get("baseline")
    return {m: base / v for m, v in per_mode.items() if v} if base else {}


def step_summary(per_mode):
    """Per mode: the step's cycles (forward + backward), its speed-up over ``baseline`` (when
    it ran) and, per job, the bound at its roofline and the job's cycles / roofline; with the
    jobs' energy (DDR4) also the step's (``energy``, joules) and baseline's over it
    (``energy_saving``)."""
    total = {m: c["forward"]["cycles"] + c["backward"]["cycles"] for m, c in per_mode.items()}
    energy = {m: c["energy"]["forward"]["total"] + c["energy"]["backward"]["total"]
              for m, c in per_mode.items() if "energy" in c}
    speedup, saving = over_baseline(total), over_baseline(energy)
    out = {}
    for m, c in per_mode.items():
        out[m] = {"forward": c["forward"]["cycles"], "backward": c["backward"]["cycles"], "step": total[m],
                  "speedup": speedup.get(m)}
        if m in energy:
            out[m]["energy"] = energy[m]
            out[m]["energy_saving"] = saving.get(m)
        if "bounds" in c:
            for j in ("forward", "backward"):
                b = c["bounds"][j]
                out[m][j + "_limit"] = b["limit"]
                out[m][j + "_roofline"] = b["roofline"]
                out[m][j + "_over_roofline"] = efficiency(c[j]["cycles"], b)
    return out


def format_step_summary(per_mode):
    """The answer the main job is run for: each mode's step and its speed-up over baseline."""
    s = step_summary(per_mode)
    base = "baseline" in s
    lines = ["the step: forward + backward cycles" + (", speed-up over baseline" if base else
                                                       " (no baseline under row-wise Adagrad)")
             + ", each job's cycles / roofline (the bound at its roofline)"
             + ("; the step's energy" if any("energy" in f for f in s.values()) else "") + ":"]
    for m, f in s.items():
        speed = f"{f['speedup']:6.2f}x" if f["speedup"] else " " * 7
        jobs = ""
        if "forward_limit" in f:
            jobs = "   " + ", ".join(f"{j} {f[j + '_over_roofline']:.2f}x its roofline ({f[j + '_limit']})"
                                    for j in ("forward", "backward"))
        if "energy" in f:
            jobs += f"; {f['energy'] * 1e6:,.2f} uJ" + (f" ({f['energy_saving']:.2f}x less than baseline)"
                                                        if f["energy_saving"] and m != "baseline" else "")
        lines.append(f"  {m:8s} {f['forward']:>9,d} + {f['backward']:>9,d} = {f['step']:>9,d} cycles "
                     f"{speed if base else ''}{jobs}".rstrip())
    return "\n".join(lines)


def check_report(per_mode, ranks=None):
    """What :func:`rtl_check` measured, as plain data (``refree rtl-check --json``, the
    benchmark): per mode, per job its counters, bounds and figures (:func:`job_figures`) and,
    on DDR4, its energy (:func:`rtl_job_energy`); and the step (:func:`step_summary`)."""
    summary = step_summary(per_mode)
    out = {}
    for m, c in per_mode.items():
        out[m] = {j: {"counters": dict(c[j]), "bounds": c["bounds"][j],
                      "figures": job_figures(c[j], c["bounds"][j], ranks, c["dram"][j] if ranks else None)}
                  for j in ("forward", "backward")}
        if "energy" in c:
            for j in ("forward", "backward"):
                out[m][j]["energy"] = c["energy"][j]
        out[m]["step"] = summary[m]
        if "hot" in c:
            out[m]["hot"] = c["hot"]
    return out
