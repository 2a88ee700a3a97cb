"""Training steps on the engine's generated Verilog, from the command line.

``refree step --engine rtl`` and the main job (``refree rtl-check``) run here: the engine
of the generator configuration (``--config``, default ``gen/default_config.toml``) is
converted to Verilog and built once per configuration and simulator (under ``build/``),
then driven by the cocotb testbench of :mod:`refree.verif.engine_run`.

Tables whose vector length D is not a multiple of 16 run on an engine of the next multiple
(rows are padded to whole 64-byte beats in memory anyway): the extra lanes hold +0 in the
table and the gradient, so they stay +0 and the real lanes are unaffected.
"""
import numpy as np

from refree.golden.errors import BatchError, ErrorCode
from refree.golden.model import StepResult, check_step_inputs, initial_state, step
from refree.golden.counts import MODES

__all__ = ["rtl_step", "rtl_check", "COUNTER_ROWS"]

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
    ("backward", "cycles_analysis", "  forming parts, analysis"),
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
    ("backward", "parts", "parts"),
]


MEMORIES = ("ddr4", "port")


def _runner(conf, dim, sim, memory):
    from refree.verif.engine_run import EngineRunner
    ddr4 = memory == "ddr4"
    return EngineRunner(conf.params, dim, conf.max_tables, conf.addr_bits, sim, conf.div_lanes,
                        conf.adagrad_lanes, dram=conf.dram if ddr4 else None,
                        window=conf.window_params() if ddr4 else None)


def rtl_step(tables, batch, grad, lr, mode, conf, sim="verilator", poolings=None, optimizer="sgd",
             eps=1e-8, state=None, memory="ddr4", host_io=False):
    """One step on the RTL; returns (StepResult, {"forward": counters, "backward": counters}).
    ``host_io``: on the buffer chip, load through the host's DDR4 writes and take the
    outputs from its reads (else the DRAM models are preloaded, a simulator backdoor)."""
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
    out = _runner(conf, dim, sim, memory).step(padded, batch, g, lr, mode, poolings=poolings, optimizer=optimizer,
                                       eps=eps, state=state, host_io=host_io)
    if out.error:
        raise BatchError("batch", f"the engine stopped with error {ErrorCode(out.error).name}",
                         ErrorCode(out.error))
    pooled = np.ascontiguousarray(out.pooled.reshape(B, T, dim)[:, :, :D].reshape(B, T * D))
    new = [np.ascontiguousarray(E[:, :D]) for E in out.tables]
    return StepResult(pooled, new, out.state, {}, []), out.counters


def rtl_check(batch, num_rows, conf, sim="verilator", lr=0.01, seed=0, out=print, optimizer="sgd",
              memory="ddr4", host_io=False):
    """The main job: one step per mode on the RTL and on the golden model; every output
    (pooled, tables, Adagrad states) compared bit for bit and the counters against the
    golden counts.  Returns the RTL counters per mode; raises AssertionError on any
    difference."""
    from refree.verif.engine_run import limits_of
    rng = np.random.default_rng(seed)
    D = conf.dim
    tables = [(0.1 * rng.standard_normal((n, D))).astype(np.float32) for n in num_rows]
    grad = (0.1 * rng.standard_normal((batch.batch_size, len(tables) * D))).astype(np.float32)
    limits = limits_of(conf.params)
    runner = _runner(conf, D, sim, memory)
    runner.build()
    out(f"design: {runner.design.verilog} ({sim} build in {runner.design.directory / sim})")
    if memory == "ddr4":
        out("on the buffer chip LrdimmNmp: a host DDR4 driver programs each job through the NMP "
            "window and reads the counters back; " + (
                "it loads the batch, the tables and the upstream gradient through ordinary DDR4 "
                "writes and reads the results back through ordinary reads" if host_io else
                "the batch, the tables and the upstream gradient are preloaded into the DRAM "
                "models through the simulator backdoor (--host-io: through the host's writes)"))
    beats = D // 16
    per_mode = {}
    for mode in MODES if optimizer == "sgd" else [m for m in MODES if m != "baseline"]:
        want = step(tables, batch, grad, lr, mode=mode, limits=limits, optimizer=optimizer)
        got, counters = rtl_step(tables, batch, grad, lr, mode, conf, sim, optimizer=optimizer,
                                 memory=memory, host_io=host_io)
        same = np.array_equal(got.pooled.view(np.uint32), want.pooled.view(np.uint32)) and all(
            np.array_equal(a.view(np.uint32), b.view(np.uint32))
            for a, b in zip(got.tables + (got.state or []), want.tables + (want.state or [])))
        c, f, b = want.counts, counters["forward"], counters["backward"]
        counts_equal = (f["table_reads"] == c["forward"]["reads"] * beats and f["adds"] == c["forward"]["adds"]
                        and f["muls"] == c["forward"]["muls"] and b["grad_reads"] == c["backward"]["reads"] * beats
                        and b["adds"] == c["backward"]["adds"] and b["muls"] == c["backward"]["muls"]
                        and b["table_writes"] == c["update"]["rmw"] * beats and b["parts"] == c["parts"]
                        and b["state_writes"] == (c["update"]["rmw"] if want.state else 0))
        out(f"{mode:8s}: pooled outputs and tables bit-identical to the golden model: "
            f"{'yes' if same else 'NO'}; counters equal the golden counts: {'yes' if counts_equal else 'NO'}")
        assert same and counts_equal, f"{mode}: the RTL and the golden model differ"
        per_mode[mode] = counters
    return per_mode


BEATS_READ = ("input_reads", "table_reads", "grad_reads", "state_reads")
BEATS_WRITTEN = ("table_writes", "pooled_writes", "state_writes")


def dram_figures(job, ranks, per_rank):
    """DDR4 figures of one job: its cycles against the bandwidth bound of DESIGN.md section
    3 (every beat the mode moves, staging included, at the R ranks' peak of one 64-byte
    burst per 4 clocks each) and the data buses' utilisation (busy clocks / R x cycles)."""
    beats = sum(job[k] for k in BEATS_READ + BEATS_WRITTEN)
    bound = 4 * beats / ranks
    busy = sum(r["data_bus_busy_cycles"] for r in per_rank)
    return {"beats": beats, "bound_cycles": bound, "cycles_over_bound": job["cycles"] / bound if bound else 0.0,
            "bus_utilisation": busy / (ranks * job["cycles"]) if job["cycles"] else 0.0,
            "activates": sum(r["activates"] for r in per_rank),
            "row_hits": sum(r["row_hits"] for r in per_rank),
            "refreshes": sum(r["refreshes"] for r in per_rank)}


DRAM_ROWS = [("beats", "DRAM beats moved (64 B)", "d"), ("bound_cycles", "bandwidth bound (cycles)", ".0f"),
             ("cycles_over_bound", "cycles / bound", ".2f"), ("bus_utilisation", "data-bus utilisation", ".3f"),
             ("activates", "ACTs", "d"), ("row_hits", "row hits", "d"), ("refreshes", "REFs", "d")]


def format_counters(per_mode, ranks=None):
    """The counters of each mode side by side; with ``ranks`` (a DDR4 run) also the
    DRAM figures of each job (:func:`dram_figures`)."""
    head = f"{'':44s}" + "".join(f"{m:>12s}" for m in per_mode)
    lines = [head]
    for j in ("forward", "backward"):
        lines.append(f"{j} job")
        for jj, name, label in COUNTER_ROWS:
            if jj == j:
                lines.append(f"  {label:42s}" + "".join(f"{per_mode[m][j][name]:12d}" for m in per_mode))
        if ranks:
            figs = {m: dram_figures(per_mode[m][j], ranks, per_mode[m]["dram"][j]) for m in per_mode}
            for key, label, fmt in DRAM_ROWS:
                lines.append(f"  {label:42s}" + "".join(f"{figs[m][key]:12{fmt}}" for m in per_mode))
    return "\n".join(lines)
