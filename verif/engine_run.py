"""Run the engine's generated Verilog on a batch: the host side of the cocotb testbench.

:class:`EngineRunner` builds one simulator model per engine configuration (reused by every
run), lays the batch, the tables and the upstream gradient out in memory
(:mod:`.staging`), runs jobs through :mod:`.engine_tb` and reads the results back.  Used by
the tests and by ``refree step --engine rtl``.
"""
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Const

from refree.golden.planner import PartLimits
from refree.hw.engine.engine import (Engine, JOB_BACKWARD, JOB_FORWARD, MODE_BASELINE, MODE_DEDUP,
                                     MODE_REFREE)
from .staging import layout, pack, unpack_rows, unpack_state
from .toolchain import SimBuild, build_root, require_simulator, verilog_for

__all__ = ["EngineRunner", "RunResult", "StepOutcome", "MODES", "limits_of"]

MODES = {"baseline": MODE_BASELINE, "dedup": MODE_DEDUP, "refree": MODE_REFREE}


def limits_of(params):
    """The golden model's part limits equal to the engine's parameters."""
    return PartLimits(params.max_bags, params.max_lookups, params.max_distinct_rows, params.max_bag_len)


def unpack_fields(layout_, value):
    return {name: (value >> f.offset) & ((1 << f.width) - 1) for name, f in layout_}


@dataclass
class RunResult:
    before: dict            # memory image (beat address -> int) before the jobs
    after: dict             # ... and after
    lay: object             # StagingLayout
    errors: list            # error code per job run (the run stops at the first error)
    counters: list          # counters per job (dict)
    cycles: list            # testbench cycles per job


@dataclass
class StepOutcome:
    pooled: np.ndarray      # (B, T*D) float32
    tables: list            # updated tables
    state: list             # updated Adagrad state per table (None with SGD)
    error: int
    counters: dict          # {"forward": {...}, "backward": {...}}
    run: RunResult


class EngineRunner:
    """One engine configuration on one simulator (built on first use)."""

    def __init__(self, params, dim, max_tables, addr_bits, sim="verilator", div_lanes=4, adagrad_lanes=4):
        self.params, self.dim, self.max_tables, self.addr_bits, self.sim = \
            params, dim, max_tables, addr_bits, sim
        self.div_lanes, self.adagrad_lanes = div_lanes, adagrad_lanes
        self._build = None

    def build(self):
        if self._build is None:
            require_simulator(self.sim)
            self.design = verilog_for(Engine, name="engine", subdir="engine", params=self.params,
                                      dim=self.dim, max_tables=self.max_tables, addr_bits=self.addr_bits,
                                      div_lanes=self.div_lanes, adagrad_lanes=self.adagrad_lanes)
            # public: cocotb reaches the top-level ports through VPI
            self._build = SimBuild(self.sim, [self.design.verilog], "engine",
                                   self.design.directory / self.sim, public=True).build()
        return self._build

    def config(self, batch, lay, mode, job, lr=0.0, poolings=None, optimizer="sgd", eps=1e-8):
        poolings = poolings or ["sum"] * batch.num_tables
        cfg = {"job": job, "mode": MODES[mode], "batch_size": batch.batch_size,
               "num_tables": batch.num_tables, "num_indices": len(batch.indices),
               "offsets_addr": lay.offsets, "indices_addr": lay.indices, "pooled_addr": lay.pooled,
               "weighted": int(batch.weighted), "weights_addr": lay.weights,
               "grad_addr": lay.grad, "lr": int(np.float32(lr).view(np.uint32)),
               "optimizer": int(optimizer == "rowwise-adagrad"), "eps": int(np.float32(eps).view(np.uint32)),
               "tables": [{"base": b, "rows": r, "stride": s, "mean": int(pool == "mean"), "state": st}
                          for (b, r, s), pool, st in zip(lay.tables, poolings, lay.states or [0] * len(lay.tables))]
               + [{"base": 0, "rows": 0, "stride": 0, "mean": 0, "state": 0}] * (self.max_tables - len(lay.tables))}
        return Const.cast(self.design.component.Config.const(cfg)).value

    def run(self, batch, tables, jobs, mode, grad=None, lr=0.0, poolings=None, seed=0, latency=(1, 8),
            ready_p=0.8, tag="job", max_cycles=1_000_000, config_layout=None, optimizer="sgd", eps=1e-8,
            state=None):
        """Run ``jobs`` (JOB_FORWARD / JOB_BACKWARD, in order) on one memory image.

        ``config_layout(lay)``, if given, returns the layout that the engine's configuration
        describes instead of the one the memory holds (tests of bad memory maps).  With
        ``optimizer="rowwise-adagrad"`` each table's state array is laid out (``state``: the
        initial states, default zeros)."""
        build = self.build()
        if tables[0].shape[1] != self.dim:
            raise ValueError(f"the engine was built for vector length {self.dim}, not {tables[0].shape[1]}")
        if len(tables) > self.max_tables:
            raise ValueError(f"the engine takes at most {self.max_tables} tables, not {len(tables)}")
        adagrad = optimizer == "rowwise-adagrad"
        lay = layout(batch, tables, with_state=adagrad)
        if adagrad and state is None:
            state = [np.zeros(E.shape[0], np.float32) for E in tables]
        if lay.end > 1 << self.addr_bits:
            raise ValueError(f"the batch and tables need {lay.end} beats of memory; the engine "
                             f"addresses {1 << self.addr_bits}")
        mem = pack(batch, tables, lay, grad, state)
        cfg_lay = lay if config_layout is None else config_layout(lay)
        configs = [str(self.config(batch, cfg_lay, mode, j, lr, poolings, optimizer, eps)) for j in jobs]
        run_dir = build_root() / "engine" / "runs" / f"{self.sim}-{tag}-{mode}-{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        addrs = np.array(sorted(mem), np.int64)
        data = np.array([list(mem[a].to_bytes(64, "little")) for a in addrs], np.uint8).reshape(-1, 64)
        np.savez(run_dir / "job.npz", addrs=addrs, data=data, configs=np.array(configs),
                 addr_bits=self.addr_bits, latency=np.array(latency), ready_p=ready_p, seed=seed,
                 max_cycles=max_cycles)
        build.run("refree.verif.engine_tb", run_dir,
                  env={"REFREE_JOB": str(run_dir / "job.npz"), "REFREE_OUT": str(run_dir / "out.npz")},
                  log_file=run_dir / "sim.log")
        with np.load(run_dir / "out.npz") as out:
            after = {int(a): int.from_bytes(bytes(d), "little") for a, d in zip(out["addrs"], out["data"])}
            counters = [unpack_fields(self.design.component.Counters, int(c)) for c in out["counters"]]
            return RunResult(mem, after, lay, [int(e) for e in out["errors"]], counters,
                             [int(c) for c in out["cycles"]])

    def step(self, tables, batch, grad, lr, mode, **kw):
        """One training step: a forward job, then a backward job; ``poolings`` per table
        ("sum" or "mean"), ``optimizer``, ``eps``, ``state`` in ``kw``."""
        r = self.run(batch, tables, [JOB_FORWARD, JOB_BACKWARD], mode, grad=grad, lr=lr, **kw)
        B, T, D = batch.batch_size, batch.num_tables, self.dim
        pooled = unpack_rows(r.after, r.lay.pooled, B * T, r.lay.row_beats, D).reshape(B, T * D)
        new = [unpack_rows(r.after, base, rows, stride, D) for base, rows, stride in r.lay.tables]
        names = ["forward", "backward"]
        state = [unpack_state(r.after, base, rows) for base, (_, rows, _) in zip(r.lay.states, r.lay.tables)] \
            if r.lay.states else None
        return StepOutcome(pooled, new, state, max(r.errors), dict(zip(names, r.counters)), r)
