"""Run the engine's generated Verilog on a batch: the host side of the cocotb testbench.

:class:`EngineRunner` builds one simulator model per engine configuration (reused by every
run), lays the batch, the tables and the upstream gradient out in memory
(:mod:`.staging`), runs jobs through :mod:`.engine_tb` and reads the results back.  Used by
the tests and by ``refree step --engine rtl``.
"""
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Const

from refree.golden.errors import BatchError
from refree.golden.planner import PartLimits, row_groups
from refree.golden.roofline import input_beats
from refree.hw.engine.engine import (Engine, JOB_BACKWARD, JOB_FORWARD, MODE_BASELINE, MODE_DEDUP,
                                     MODE_REFREE)
from refree.hw.engine.stale_set import StaleSetParams, fit_stale
from refree.hw.engine.staging import check_stripe
from refree.hw.lrdimm.hot_row_store import HOT_JOB_ENGINE, HOT_JOB_FLUSH, HOT_JOB_LOAD, LIST_WORDS
from .staging import fit_hot_beats, layout, pack, unpack_rows, unpack_staging_rows, unpack_state
from .toolchain import CocotbFailure, SimBuild, build_root, require_simulator, verilog_for

__all__ = ["EngineRunner", "RunResult", "StepOutcome", "MODES", "JOB_NAMES", "limits_of", "cycle_limit",
           "EngineTimeout", "JOB_HOT_LOAD", "JOB_HOT_FLUSH"]

MODES = {"baseline": MODE_BASELINE, "dedup": MODE_DEDUP, "refree": MODE_REFREE}
#: The hot-row store's jobs (a chip built with one, ``EngineRunner(..., hot=...)``): load the
#: run's ``hot_beats``, flush them back (hw/lrdimm/hot_row_store.py).
JOB_HOT_LOAD, JOB_HOT_FLUSH = "hot-load", "hot-flush"
JOB_NAMES = {JOB_FORWARD: "forward", JOB_BACKWARD: "backward", JOB_HOT_LOAD: "hot load", JOB_HOT_FLUSH: "hot flush"}

#: The formula of :func:`cycle_limit`, as the error of a stopped job quotes it.
CYCLE_LIMIT_FORMULA = ("100,000 + 64 x (lookups + bags) + 4 x the job's baseline traffic at one rank "
                       "[+ 4 x the Adagrad unit's rows]")


def cycle_limit(batch, dim, job, optimizer="sgd", adagrad_lanes=4, hot_beats=0):
    """The testbench's default limit of one job, in cycles: a generous multiple of the job's
    size, so that a large batch runs to its end and a hung engine is stopped in time
    proportionate to the job::

        100,000 + 64 x (N + T*B) + 4 x W  [+ 4 x U x (D/P + 2*D + 256)  backward, Adagrad]

    ``N`` lookups, ``T*B`` bags; ``W`` = 4 x the beats of the job in ``baseline`` mode (the
    most any mode moves: each input array once, one D/16-beat row per lookup read --
    forward -- or read, written and its gradient row read -- backward --, the pooled rows,
    Adagrad's two state beats a lookup), i.e. its memory bound at one rank, whatever the
    mode, ranks or memory: the sharing modes pay their sorts and analysis in place of that
    traffic; ``U`` the distinct rows of each table (Adagrad's updated rows, each
    ``D/P + 2*D + 256`` cycles on the vector unit, more than it takes today).  Measured
    against it: ``baseline``'s backward job, the slowest per lookup, takes about 40 % of
    ``4 x W`` (MovieLens B = 1024 on one DDR4-2400 rank: 1,290,076 cycles, its limit
    4,476,976).  A hot-row store's job: ``100,000 + 64 x`` the store's ``hot_beats``."""
    N, TB, row = len(batch.indices), batch.batch_size * batch.num_tables, -(-dim // 16)
    if job in (JOB_HOT_LOAD, JOB_HOT_FLUSH):     # at most the store's beats, read or written one by one
        return 100_000 + 64 * hot_beats
    adagrad = optimizer == "rowwise-adagrad"
    if job == JOB_FORWARD:
        beats = input_beats(batch) + N * row + TB * row
    else:
        beats = input_beats(batch) + 3 * N * row + (2 * N if adagrad else 0)
    limit = 100_000 + 64 * (N + TB) + 4 * 4 * beats
    if adagrad and job == JOB_BACKWARD:
        rows = sum(len(np.unique(batch.table_slice(t)[0])) for t in range(batch.num_tables))
        limit += 4 * rows * (dim // adagrad_lanes + 2 * dim + 256)
    return int(limit)


class EngineTimeout(CocotbFailure):
    """A job ran past its cycle limit and the testbench stopped it (``job``, ``mode``,
    ``limit``, ``run_dir``)."""

    def __init__(self, job, mode, limit, run_dir, explicit):
        self.job, self.mode, self.limit, self.run_dir = job, mode, limit, run_dir
        how = ("the max_cycles given by the caller" if explicit
               else f"the testbench's limit for this job, {CYCLE_LIMIT_FORMULA}")
        super().__init__(f"the engine did not finish the {job} job of {mode} within {limit:,} cycles "
                         f"({how}; the run's files are in {run_dir})")


def _assertion_in_log(log):
    """The last AssertionError's message in a cocotb log, or None."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"AssertionError: (.*)", text)
    return found[-1].strip() if found else None


def limits_of(params):
    """The golden model's part limits equal to the engine's parameters."""
    return PartLimits(params.max_bags, params.max_lookups, params.max_distinct_rows, params.max_bag_len)


def group_bits(batch, limits, groups=None):
    """log2 of each table's row groups for the engine's descriptors: ``groups`` (G per
    table) or the golden planner's fewest that fit (:func:`~refree.golden.planner.row_groups`;
    a table that fits no grouping, or a batch the engine must refuse anyway, gets one group:
    the engine refuses the first with ROW_GROUP_TOO_LARGE as the golden model does)."""
    out = []
    for t in range(batch.num_tables):
        if groups is not None:
            G = groups[t]
        else:
            try:
                G = row_groups(batch, t, limits)
            except (BatchError, ValueError, IndexError):    # (bad batches of the error tests too)
                G = 1
        out.append(int(G).bit_length() - 1)
    return out


def unpack_fields(layout_, value):
    return {name: (value >> f.offset) & ((1 << f.width) - 1) for name, f in layout_}


@dataclass
class RunResult:
    before: dict            # memory image (beat address -> int) before the jobs
    after: dict             # ... and after
    lay: object             # StagingLayout
    errors: list            # error code per job run (the run stops at the first error, unless go_on)
    counters: list          # counters per job (dict)
    cycles: list            # testbench cycles per job
    dram: list = ()         # per job, per rank: the DDR4 model's command counts (ddr4 memory)
    readback: dict = None   # beat address -> int read back by the host (ddr4)
    windows: list = ()      # per job: the window's bursts read by the host after it (ddr4)
    intrude: tuple = None   # (data of the refused read, STATUS after CLEAR) (ddr4)
    waves: object = None    # Path of the run's every signal, VCD or FST (a runner with ``waves``)


@dataclass
class StepOutcome:
    pooled: np.ndarray      # (B, T*D) float32
    tables: list            # updated tables
    state: list             # updated Adagrad state per table (None with SGD)
    error: int
    counters: dict          # {"forward": {...}, "backward": {...}}
    run: RunResult


class EngineRunner:
    """One engine configuration on one simulator (built on first use).

    With ``dram`` (a :class:`~refree.hw.ddr4.params.DramParams`) the engine runs in the
    whole buffer chip (:class:`~refree.verif.lrdimm_top.LrdimmSimTop`, its addresses those
    of the ranks, ``addr_bits`` ignored): the host programs every job through the NMP window
    and reads the registers back, every DRAM command and every host command is checked
    against the timing rules (a violation fails the run); without, the bare engine on the
    generic memory port with random latency and backpressure.  ``staging_stripe`` lays the
    pooled output and the gradient out for the bare engine (:mod:`refree.hw.engine.staging`;
    default 1, row-major); the chip's is its mapping's.  ``waves``: a build that records every
    signal of each run (``RunResult.waves``: VCD under Verilator, FST under Icarus)."""

    def __init__(self, params, dim, max_tables, addr_bits, sim="verilator", div_lanes=4, adagrad_lanes=4,
                 dram=None, window=None, fold_lanes=16, staging_stripe=None, waves=False, hot=None,
                 stale=StaleSetParams()):
        self.params, self.dim, self.max_tables, self.sim = params, dim, max_tables, sim
        self.stale = stale          # the engine's stale set (Slipstream; default none)
        self.hot = hot if hot is not None and hot.enabled else None     # the chip's hot-row store
        if self.hot is not None and dram is None:
            raise ValueError("a hot-row store needs the buffer chip (dram=...)")
        self.div_lanes, self.adagrad_lanes, self.dram = div_lanes, adagrad_lanes, dram
        self.fold_lanes, self.waves = fold_lanes, waves
        self.window = window        # of the chip (None: its default)
        self.addr_bits = dram.mapping.addr_bits if dram is not None else addr_bits
        self._build = None
        if dram is not None and staging_stripe not in (None, dram.mapping.staging_stripe):
            raise ValueError(f"the buffer chip's staging stripe is its mapping's "
                             f"({dram.mapping.staging_stripe}), not {staging_stripe!r}")
        # the layout of the pooled output and the gradient (refree.hw.engine.staging)
        self.staging_stripe = dram.mapping.staging_stripe if dram is not None \
            else 1 if staging_stripe is None else staging_stripe
        check_stripe(self.staging_stripe)

    def build(self):
        if self._build is None:
            require_simulator(self.sim)
            engine_kwargs = dict(params=self.params, dim=self.dim, max_tables=self.max_tables,
                                 div_lanes=self.div_lanes, adagrad_lanes=self.adagrad_lanes,
                                 fold_lanes=self.fold_lanes)
            if self.stale.enabled:      # (the default named not, so that older builds stay valid)
                engine_kwargs["stale"] = self.stale
            if self.dram is None:
                name = "engine"
                self.design = verilog_for(Engine, name=name, subdir=name, addr_bits=self.addr_bits,
                                          staging_stripe=self.staging_stripe, **engine_kwargs)
            else:
                from refree.hw.lrdimm.lrdimm_nmp import default_window
                from .lrdimm_top import LrdimmSimTop
                name = "lrdimm"
                # (the default named, so a runner given it shares the build)
                window = self.window or default_window(self.dram)
                hot = {} if self.hot is None else {"hot": self.hot}
                self.design = verilog_for(LrdimmSimTop, name=name, subdir=name,
                                          engine_kwargs=engine_kwargs, dram=self.dram, window=window, **hot)
            # cocotb reaches the top-level ports through VPI; every signal only for
            # REFREE_DEBUG (a separate, much larger build)
            debug = bool(os.environ.get("REFREE_DEBUG"))
            flavour = ("-debug" if debug else "") + ("-waves" if self.waves else "")
            self._build = SimBuild(self.sim, [self.design.verilog], name, self.design.directory / (self.sim + flavour),
                                   public=True if debug else "ports", waves=self.waves).build()
        return self._build

    def _check_clear_of_window(self, end, mem):
        """The host cannot reach the DRAM rows under the NMP window: refuse a layout (beats
        0 to ``end``, and the image ``mem``) that reaches into them."""
        m, w = self.dram.mapping, self.design.component.regmap.window
        for row in range(w.row, w.row + w.rows):
            for burst in range(m.geometry.bursts_per_row):
                a = m.address(w.rank, w.bg, w.ba, row, 8 * burst)
                if a < end or a in mem:
                    raise BatchError("window", f"beat address {a} lies under the NMP window (rank "
                                     f"{w.rank}, bank group {w.bg}, bank {w.ba}, rows {w.row} to "
                                     f"{w.row + w.rows - 1}), which the host cannot reach; the "
                                     f"batch and tables need {end} beats")

    def memory_settings(self):
        """The job file's description of the memory behind the engine."""
        if self.dram is None:
            return {"memory": "port"}
        d, rm = self.dram, self.design.component.regmap
        g, w = d.geometry, rm.window

        def regs(group):
            return np.array([(r.word, r.width) for r in rm.registers if r.group == group], np.int64)
        return {"memory": "ddr4", "grade": d.grade, "ranks": d.ranks, "chunk_beats": d.chunk_beats,
                "geometry": np.array([g.bank_groups, g.banks_per_group, g.rows, g.columns, g.burst_bytes]),
                "window": np.array([w.rank, w.bg, w.ba, w.row, w.rows]), "map_bursts": rm.bursts,
                "control_words": np.array([rm[n].word for n in ("STATUS", "CONTROL", "CLEAR")]),
                "config_regs": regs("config"), "counter_regs": regs("counters"), "poll_gap": 32}

    def config(self, batch, lay, mode, job, lr=0.0, poolings=None, optimizer="sgd", eps=1e-8, groups=None,
               hot_list=(0, 0), stale_list=(0, 0, 0)):
        """The configuration word of ``job``; ``hot_list``: the hot list's (address, count);
        ``stale_list``: a backward job's stale list (address, count: 0 keeps the set as it
        is) and whether it skips the set's rows (on an engine with a stale set)."""
        poolings = poolings or ["sum"] * batch.num_tables
        gbits = group_bits(batch, limits_of(self.params), groups)
        hot_job = {JOB_HOT_LOAD: HOT_JOB_LOAD, JOB_HOT_FLUSH: HOT_JOB_FLUSH}.get(job, HOT_JOB_ENGINE)
        hot = {} if self.hot is None else {"hot_job": hot_job, "hot_list": hot_list[0], "hot_count": hot_list[1]}
        if stale_list[2] and not self.stale.enabled:
            raise ValueError("a stale list needs an engine with a stale set (stale=...)")
        if self.stale.enabled:
            backward = job == JOB_BACKWARD
            hot.update(stale_addr=stale_list[0], stale_count=stale_list[1] if backward else 0,
                       stale_use=stale_list[2] if backward else 0)
        if hot_job != HOT_JOB_ENGINE:
            if self.hot is None:
                raise ValueError(f"job {job!r} needs a chip with a hot-row store (hot=...)")
            job = JOB_FORWARD       # (the engine's fields are not used)
        cfg = {**hot, "job": job, "mode": MODES[mode], "batch_size": batch.batch_size,
               "num_tables": batch.num_tables, "num_indices": len(batch.indices),
               "offsets_addr": lay.offsets, "indices_addr": lay.indices, "pooled_addr": lay.pooled,
               "offsets_int32": int(batch.offsets_int32), "indices_int32": int(batch.indices_int32),
               "weighted": int(batch.weighted), "weights_addr": lay.weights,
               "grad_addr": lay.grad, "lr": int(np.float32(lr).view(np.uint32)),
               "optimizer": int(optimizer == "rowwise-adagrad"), "eps": int(np.float32(eps).view(np.uint32)),
               "tables": [{"base": b, "rows": r, "stride": s, "mean": int(pool == "mean"), "state": st, "groups": gb}
                          for (b, r, s), pool, st, gb in zip(lay.tables, poolings, lay.states or [0] * len(lay.tables),
                                                             gbits)]
               + [{"base": 0, "rows": 0, "stride": 0, "mean": 0, "state": 0, "groups": 0}]
               * (self.max_tables - len(lay.tables))}
        return Const.cast(self.design.component.Config.const(cfg)).value

    def run(self, batch, tables, jobs, mode, grad=None, lr=0.0, poolings=None, seed=0, latency=(1, 8),
            ready_p=0.8, tag="job", max_cycles=None, config_layout=None, optimizer="sgd", eps=1e-8,
            state=None, host_load=False, readback=(), intrude_addr=None, extra=None, groups=None, go_on=False,
            hot_beats=(), stale_entries=()):
        """Run ``jobs`` (JOB_FORWARD / JOB_BACKWARD, and on a chip with a hot-row store
        JOB_HOT_LOAD / JOB_HOT_FLUSH, in order) on one memory image.

        ``hot_beats``: the beat addresses that a JOB_HOT_LOAD loads, in order; their list is
        laid out after the batch and tables.  ``stale_entries``: the stale list (int64
        entries, :mod:`refree.hw.engine.stale_set`), after it, that the first backward job
        loads; every backward job skips its rows (the later ones keep the set).

        ``config_layout(lay)``, if given, returns the layout that the engine's configuration
        describes instead of the one the memory holds (tests of bad memory maps).  With
        ``optimizer="rowwise-adagrad"`` each table's state array is laid out (``state``: the
        initial states, default zeros).

        On the buffer chip: ``host_load`` loads the memory image through the host's ordinary
        DDR4 writes (else it is preloaded into the DRAM models, a simulator backdoor);
        ``readback`` lists beat addresses that the host reads back through ordinary reads
        after the jobs (``RunResult.readback``); with ``intrude_addr`` the host reads that beat
        and writes the next one during the first job, which the chip must refuse
        (``RunResult.intrude``: the data read and STATUS after a CLEAR).  ``extra`` ({beat
        address: int}) adds bursts to the memory image (host traffic tests).

        The run stops at the first job that sets an error, unless ``go_on`` (a job after a
        refused one, on the same engine: nothing of the refused job may be left in it).
        ``poolings`` may also be a list of per-job poolings (a job refused for its poolings,
        then one that is not).

        ``max_cycles``: the cycles after which the testbench stops a job that has not finished
        (every job; default: :func:`cycle_limit` of each job).  A stopped job raises
        :class:`EngineTimeout`; any other failure of the testbench a ``CocotbFailure`` with its
        assertion's message."""
        build = self.build()
        if tables[0].shape[1] != self.dim:
            raise ValueError(f"the engine was built for vector length {self.dim}, not {tables[0].shape[1]}")
        if len(tables) > self.max_tables:
            raise ValueError(f"the engine takes at most {self.max_tables} tables, not {len(tables)}")
        adagrad = optimizer == "rowwise-adagrad"
        lay = layout(batch, tables, with_state=adagrad, stripe=self.staging_stripe)
        if adagrad and state is None:
            state = [np.zeros(E.shape[0], np.float32) for E in tables]
        if lay.end > 1 << self.addr_bits:
            raise ValueError(f"the batch and tables need {lay.end} beats of memory; the engine "
                             f"addresses {1 << self.addr_bits}")
        mem = pack(batch, tables, lay, grad, state)
        mem.update(extra or {})
        hot_list = (lay.end, len(hot_beats))       # 32-bit words, LIST_WORDS a beat
        for k in range(0, len(hot_beats), LIST_WORDS):
            mem[lay.end + k // LIST_WORDS] = sum(int(a) << (32 * i) for i, a in enumerate(hot_beats[k:k + LIST_WORDS]))
        end = lay.end + -(-len(hot_beats) // LIST_WORDS)
        stale_list = (end, len(stale_entries), int(len(stale_entries) > 0))      # int64, 8 a beat
        for k in range(0, len(stale_entries), 8):
            mem[end + k // 8] = sum(int(e) << (64 * i) for i, e in enumerate(stale_entries[k:k + 8]))
        end += -(-len(stale_entries) // 8)
        if self.dram is not None:
            self._check_clear_of_window(end, mem)
        cfg_lay = lay if config_layout is None else config_layout(lay)
        per_job = poolings if poolings and isinstance(poolings[0], (list, tuple)) else [poolings] * len(jobs)
        first_bwd = jobs.index(JOB_BACKWARD) if JOB_BACKWARD in jobs else None
        kept_list = (stale_list[0], 0, stale_list[2])       # (a later backward job keeps the set)
        configs = [str(self.config(batch, cfg_lay, mode, j, lr, pl, optimizer, eps, groups, hot_list,
                                   stale_list if i == first_bwd else kept_list))
                   for i, (j, pl) in enumerate(zip(jobs, per_job))]
        # (the process's and thread's own folder: runs of one design side by side, in two
        # processes or a worker's threads, must not share their job's and results' files)
        run_dir = (build_root() / self.design.name / "runs" /
                   f"{self.sim}-{tag}-{mode}-{seed}-{os.getpid()}-{threading.get_ident()}")
        run_dir.mkdir(parents=True, exist_ok=True)
        stopped = run_dir / "stopped.json"         # written by the testbench when it stops a job
        stopped.unlink(missing_ok=True)
        limits = [int(max_cycles) if max_cycles is not None else
                  cycle_limit(batch, self.dim, j, optimizer, self.adagrad_lanes,
                              self.hot.beats if self.hot else 0)
                  for j in jobs]
        addrs = np.array(sorted(mem), np.int64)
        data = np.array([list(mem[a].to_bytes(64, "little")) for a in addrs], np.uint8).reshape(-1, 64)
        np.savez(run_dir / "job.npz", addrs=addrs, data=data, configs=np.array(configs), mode=mode,
                 addr_bits=self.addr_bits, latency=np.array(latency), ready_p=ready_p, seed=seed,
                 max_cycles=np.array(limits, np.int64), io_cycles=100_000 + 64 * len(mem), host_load=host_load,
                 readback=np.array(sorted(readback), np.int64),
                 intrude=intrude_addr is not None, intrude_addr=intrude_addr or 0, go_on=go_on,
                 **self.memory_settings())
        waves = run_dir / ("waves" + build.waves_file(run_dir).suffix) if self.waves else None
        if waves is not None:
            waves.unlink(missing_ok=True)      # (an earlier run's)
        try:
            build.run("refree.verif.engine_tb", run_dir,
                      env={"REFREE_JOB": str(run_dir / "job.npz"), "REFREE_OUT": str(run_dir / "out.npz")},
                      log_file=run_dir / "sim.log")
        except CocotbFailure as exc:
            if stopped.is_file():
                i = json.loads(stopped.read_text())["job"]
                raise EngineTimeout(JOB_NAMES.get(jobs[i], f"#{i}"), mode, limits[i], run_dir,
                                    max_cycles is not None) from None
            why = _assertion_in_log(run_dir / "sim.log")
            if why is None:
                raise
            raise CocotbFailure(f"{exc}: {why} (see {run_dir / 'sim.log'})") from None
        finally:
            # the waves beside the run, also when it failed (Icarus writes into the build's folder)
            if waves is not None and build.waves_file(run_dir).is_file():
                shutil.move(build.waves_file(run_dir), waves)
        with np.load(run_dir / "out.npz") as out:
            after = {int(a): int.from_bytes(bytes(d), "little") for a, d in zip(out["addrs"], out["data"])}
            counters = [unpack_fields(self.design.component.Counters, int(c)) for c in out["counters"]]
            dram, extra = [], {}
            if "violations" in out:         # the buffer chip
                violations = [str(v) for v in out["violations"]]
                assert not violations, (f"{len(violations)} DDR4 protocol violations, first: "
                                        + "; ".join(violations[:5]))
                extra = {"readback": dict(zip(sorted(readback), (int(x) for x in out["readback"]))),
                         "windows": [[int(x) for x in job_] for job_ in out["window_bursts"]],
                         "intrude": tuple(int(x) for x in out["intrude"]) if "intrude" in out else None}
            if "dram" in out:
                fields = [str(f) for f in out["dram_fields"]]
                dram = [[dict(zip(fields, (int(x) for x in rank))) for rank in job_]
                        for job_ in out["dram"]]
            if self.waves:
                if not waves.is_file():     # (e.g. cocotb's WAVES=0 in the environment)
                    raise RuntimeError(f"the simulator wrote no waves (see {run_dir / 'sim.log'})")
                extra["waves"] = waves
            return RunResult(mem, after, lay, [int(e) for e in out["errors"]], counters,
                             [int(c) for c in out["cycles"]], dram, **extra)

    def step(self, tables, batch, grad, lr, mode, host_io=False, hot_rows=None, stale=None, **kw):
        """One training step: a forward job, then a backward job; ``poolings`` per table
        ("sum" or "mean"), ``optimizer``, ``eps``, ``state`` in ``kw``.  With ``host_io`` (on
        the buffer chip) the host loads everything through ordinary DDR4 writes and the
        outputs returned are those it reads back through ordinary reads.

        ``hot_rows`` (per table an array of rows, FAE's hot set; a chip with a hot-row
        store): the rows that the store's sets hold (:func:`fit_hot_beats`) are loaded before
        the step and flushed after it; the counters gain the jobs ``"hot load"`` and ``"hot
        flush"`` and ``"hot_rows"``, per table the rows loaded.

        ``stale`` (per table a boolean per row, Slipstream's stale rows; an engine with a stale
        set): the pairs that the set holds (:func:`fit_stale`) are the backward job's list;
        the counters gain ``"stale_rows"``, per table the boolean array of the rows kept
        (the golden step's ``stale``)."""
        lay = layout(batch, tables, with_state=kw.get("optimizer") == "rowwise-adagrad", stripe=self.staging_stripe)
        if host_io:
            if self.dram is None:
                raise ValueError("host_io needs the buffer chip (dram=...)")
            kw.update(host_load=True, readback=lay.outputs())
        jobs, kept = [JOB_FORWARD, JOB_BACKWARD], None
        if hot_rows is not None:
            if self.hot is None:
                raise ValueError("hot_rows needs a chip with a hot-row store (hot=...)")
            kw["hot_beats"], kept = fit_hot_beats(hot_rows, lay, self.addr_bits, self.hot)
            jobs = [JOB_HOT_LOAD, *jobs, JOB_HOT_FLUSH]
        stale_kept = None
        if stale is not None:
            if not self.stale.enabled:
                raise ValueError("stale needs an engine with a stale set (stale=...)")
            kw["stale_entries"], stale_kept = fit_stale(stale, self.stale, self.params.index_width, self.max_tables)
        r = self.run(batch, tables, jobs, mode, grad=grad, lr=lr, **kw)
        if host_io:     # the outputs as the host read them (and DRAM holds the same)
            assert r.readback == {a: r.after.get(a, 0) for a in r.readback}, "host read-back differs from DRAM"
            r.after = {**r.after, **r.readback}
        B, T, D = batch.batch_size, batch.num_tables, self.dim
        pooled = unpack_staging_rows(r.after, r.lay, r.lay.pooled, B * T, D).reshape(B, T * D)
        new = [unpack_rows(r.after, base, rows, stride, D) for base, rows, stride in r.lay.tables]
        names = [JOB_NAMES[j] for j in jobs]
        state = [unpack_state(r.after, base, rows) for base, (_, rows, _) in zip(r.lay.states, r.lay.tables)] \
            if r.lay.states else None
        counters = dict(zip(names, r.counters))
        if kept is not None:
            counters["hot_rows"] = kept
        if stale_kept is not None:
            counters["stale_rows"] = stale_kept
        if r.dram:      # per job, per rank: the DDR4 command counts
            counters["dram"] = dict(zip(names, r.dram))
        return StepOutcome(pooled, new, state, max(r.errors), counters, r)
