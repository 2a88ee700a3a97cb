"""`refree` command line: analyze, step, rtl-check, convert, profile, generate, sweep, train, bench and synth.

Every bad input ends with a message naming the field and the value, exit status 2, and no
output file written.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

from refree.golden.batch import POOLINGS, load_batch, read_arrays, save_batch
from refree.golden.dlrm_data import DlrmSelection, is_dlrm_file, load_dlrm
from refree.golden.counts import MODES
from refree.golden.errors import BatchError
from refree.golden.model import BACKWARDS, OPTIMIZERS, step
from refree.golden.traces import TRACE_NAMES, Trace, make_trace

from .config import package_version
from .report import analyze, format_report

TRACES = ("movielens", "zipf", "uniform", "meta")


class UsageError(Exception):
    pass


def _poolings(arg, T):
    """--pooling: one mode for every table, or a comma-separated mode per table."""
    modes = arg.split(",")
    if len(modes) == 1:
        modes = modes * T
    if len(modes) != T:
        raise BatchError("--pooling", f"gives {len(modes)} modes for {T} tables: {arg!r}")
    for m in modes:
        if m not in POOLINGS:
            raise BatchError("--pooling", f"must be one of {POOLINGS}, not {m!r}")
    return modes


def _read_batch(args, scratch_dir=None):
    """The batch argument -> (batch, title, rows of each table or None): a batch file .npz,
    or a dlrm_datasets file (.pt.gz, decompressed into ``scratch_dir``) with the selection of
    --select-tables, --batch-size and --batch-index."""
    if getattr(args, "index_dtype", "int64") != "int64":
        raise UsageError("--index-dtype applies to a trace: a file's arrays keep their own dtypes")
    if is_dlrm_file(args.batch):
        tables = None
        if args.select_tables is not None:
            try:
                tables = tuple(int(t) for t in args.select_tables.split(","))
            except ValueError:
                raise BatchError("--select-tables", f"must be table numbers separated by commas, not "
                                                    f"{args.select_tables!r}") from None
        tr = load_dlrm(args.batch, DlrmSelection(tables, args.batch_size, args.batch_index), scratch_dir)
        picked = "all tables" if tables is None else f"tables {','.join(map(str, tables))}"
        return tr.batch, f"{os.path.basename(args.batch)} ({picked}, window {args.batch_index})", tr.num_rows
    given = [o for o, v in (("--select-tables", args.select_tables), ("--batch-size", args.batch_size),
                            ("--batch-index", args.batch_index)) if v]
    if given:
        raise UsageError(f"{given[0]} applies to a dlrm_datasets file (.pt.gz) or a trace, not to a batch file")
    return load_batch(args.batch), os.path.basename(args.batch), None


def cmd_analyze(args):
    if args.batch:
        if args.trace:
            raise UsageError("give either a batch file or --trace, not both")
        batch, title, rows = _read_batch(args)
    else:
        if not args.trace:
            raise UsageError("give a batch file or --trace NAME")
        if args.select_tables is not None:
            raise UsageError("--select-tables selects from a dlrm_datasets file (.pt.gz), not from a trace")
        tr, title = _trace_batch(args)
        batch, rows = tr.batch, tr.num_rows
    poolings = _poolings(args.pooling, batch.num_tables)
    if rows is None:
        rows = [int(batch.table_slice(t)[0].max(initial=-1)) + 1 for t in range(batch.num_tables)]
    batch.check_against(rows, poolings)         # rejects negative indices, weights with mean
    rep = analyze(batch, poolings, _limits(_config(args)) if args.engine_limits else None)
    print(json.dumps(rep) if args.json else format_report(rep, title))


def _load_tables(path):
    """A .npy (one table) or an .npz with table_0 .. table_{T-1}; returns (tables, was_npz)."""
    data = read_arrays(path, "--table")
    if isinstance(data, np.ndarray):
        return [data], False
    names = list(data)
    T = len(names)
    want = [f"table_{t}" for t in range(T)]
    if sorted(names) != sorted(want):
        raise BatchError("--table", f"{str(path)!r}: an .npz must hold exactly table_0 .. table_{T - 1}, "
                                    f"not {names}")
    return [data[n] for n in want], True


def _load_hot(path, batch, num_rows, conf, memory):
    """``--hot``: FAE's hot set as ``refree profile --out`` writes it (hot_0 .. hot_{T-1},
    integer rows, each inside its table and once), for a chip whose store holds it whole."""
    if memory != "ddr4" or not conf.hot.enabled:
        raise BatchError("--hot", "needs the buffer chip with a hot-row store: --memory ddr4 and a --config "
                                  "whose [hot] beats is a power of two (e.g. 4096; the default chip has none)")
    data = read_arrays(path, "--hot")
    T = batch.num_tables
    if isinstance(data, np.ndarray) or sorted(data) != sorted(f"hot_{t}" for t in range(T)):
        raise BatchError("--hot", f"{str(path)!r}: must be an .npz with hot_0 .. hot_{T - 1} (refree profile "
                                  f"--out of the same --tables)")
    rows = [data[f"hot_{t}"] if data[f"hot_{t}"].size else np.zeros(0, np.int64) for t in range(T)]
    for t, r in enumerate(rows):
        if r.ndim != 1 or r.dtype.kind not in "iu" and r.size:
            raise BatchError("--hot", f"{str(path)!r}: hot_{t} must be a 1-D array of integer rows, "
                                      f"not {r.dtype} of shape {r.shape}")
    from refree.verif.staging import TableShape, hot_row_beats, layout
    lay = layout(batch, [TableShape(n, conf.dim) for n in num_rows])
    try:
        beats = len(hot_row_beats(rows, lay))
    except BatchError as e:                         # a row outside its table, or twice
        raise BatchError("--hot", f"{str(path)!r}: {e.field}: {e.message}") from None
    if beats > conf.hot.beats:
        raise BatchError("--hot", f"{str(path)!r} holds {sum(map(len, rows)):,} rows = {beats:,} beats, more than "
                                  f"the hot-row store's {conf.hot.beats:,} beats ([hot] beats)")
    return rows


def _load_state(path, T):
    data = read_arrays(path, "--state")
    if isinstance(data, np.ndarray) or sorted(data) != sorted(f"state_{t}" for t in range(T)):
        raise BatchError("--state", f"{str(path)!r}: must be an .npz with state_0 .. state_{T - 1}")
    return [data[f"state_{t}"] for t in range(T)]


def _write_outputs(out_dir, res, was_npz):
    """Write into a temporary folder first, so a failure leaves no partial output."""
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)) or ".", exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".refree-", dir=os.path.dirname(os.path.abspath(out_dir)))
    np.save(os.path.join(tmp, "pooled.npy"), res.pooled)
    if was_npz:
        np.savez(os.path.join(tmp, "table.npz"), **{f"table_{t}": E for t, E in enumerate(res.tables)})
    else:
        np.save(os.path.join(tmp, "table.npy"), res.tables[0])
    if res.state is not None:
        np.savez(os.path.join(tmp, "state.npz"), **{f"state_{t}": s for t, s in enumerate(res.state)})
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    os.rmdir(tmp)


def _config(args):
    from .config import load_config
    try:
        return load_config(args.config)
    except (ValueError, TypeError) as e:
        raise BatchError("--config", str(e)) from None


def _limits(conf):
    from refree.verif.engine_run import limits_of
    return limits_of(conf.params)


def _check_waves(args):
    """--waves: a folder that exists, before any simulation."""
    if args.waves is None:
        return
    if getattr(args, "engine", "rtl") != "rtl":
        raise BatchError("--waves", "records the RTL's signals: it needs --engine rtl")
    folder = os.path.dirname(os.path.abspath(args.waves))
    if os.path.isdir(args.waves):
        raise BatchError("--waves", f"{args.waves} is a folder: give a file name")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise BatchError("--waves", f"cannot write {args.waves}: no writable folder {folder}")


def cmd_step(args):
    _check_waves(args)
    conf = _config(args)
    batch, _, _ = _read_batch(args)
    tables, was_npz = _load_tables(args.table)
    grad = read_arrays(args.grad, "--grad")
    if not isinstance(grad, np.ndarray):
        raise BatchError("--grad", f"{args.grad!r}: must be one .npy array, not an .npz")
    if args.backward == "parts" and args.engine != "golden" and args.mode != "baseline":
        raise BatchError("--backward", "parts runs on the golden model only: the engine runs backward "
                         "by rows (docs/design.md section 2)")
    state = _load_state(args.state, len(tables)) if args.state else None
    if state is not None and args.optimizer != "rowwise-adagrad":
        raise BatchError("--state", "is only used with --optimizer rowwise-adagrad")
    poolings = _poolings(args.pooling, len(tables))
    # Both engines split the batch by the configured engine's part limits, so that their
    # outputs are the same bytes.
    if args.engine == "golden":
        res = step(tables, batch, grad, args.lr, poolings=poolings, mode=args.mode,
                   optimizer=args.optimizer, eps=args.eps, state=state, limits=_limits(conf),
                   backward=args.backward)
        report = {"backward": args.backward, "counts": res.counts, "tables": res.table_counts}
        if res.row_groups is not None:
            report["row_groups"] = res.row_groups
    else:
        from .rtl import rtl_step
        try:
            res, counters = rtl_step(tables, batch, grad, args.lr, args.mode, conf, args.sim,
                                     poolings=poolings, optimizer=args.optimizer, eps=args.eps, state=state,
                                     memory=args.memory, host_io=args.host_io, waves=args.waves)
        except AssertionError as e:     # e.g. a job the testbench stopped (nothing written)
            print(f"refree: error: {e}", file=sys.stderr)
            return 1
        report = {"sim": args.sim, "memory": args.memory, "counters": counters}
        if args.memory == "ddr4":
            report["top"] = "LrdimmNmp (jobs programmed through the NMP window by a host DDR4 driver)"
            report["preloaded"] = ("no: loaded through host DDR4 writes, results read through host DDR4 reads"
                                   if args.host_io else
                                   "batch, tables and gradient placed in DRAM through the simulator backdoor")
    _write_outputs(args.out, res, was_npz)
    print(json.dumps({"mode": args.mode, "engine": args.engine, "optimizer": args.optimizer, **report}))


def _trace_batch(args):
    """--trace and its options -> (trace, title)."""
    B = TRACE_BATCH_SIZE if args.batch_size is None else args.batch_size
    if args.trace == "movielens":
        tr = make_trace("movielens", B, args.tables, batch_index=args.batch_index)
        title = f"trace movielens (batch {args.batch_index})"
    else:
        tr = make_trace(args.trace, B, args.tables, seed=args.seed)
        title = f"trace {args.trace} (seed {args.seed})"
    if args.index_dtype == "int64":
        return tr, title
    return Trace(tr.batch.with_index_dtype(args.index_dtype), tr.num_rows), f"{title}, {args.index_dtype} offsets and indices"


def _memory_config(args):
    """The configuration with --ranks / --grade applied to its DRAM side."""
    from dataclasses import replace
    conf = _config(args)
    changes = {k: v for k, v in (("ranks", args.ranks), ("grade", args.grade)) if v is not None}
    try:
        conf = replace(conf, dram=replace(conf.dram, **changes)) if changes else conf
        conf.window_params()        # (the window must fit the ranks given)
        return conf
    except ValueError as e:
        raise BatchError("--ranks/--grade", str(e)) from None


def cmd_rtl_check(args):
    from .rtl import check_report, format_counters, format_step_summary, rtl_check
    _check_waves(args)
    conf = _memory_config(args)
    tr, title = _trace_batch(args)
    hot_rows = None if args.hot is None else _load_hot(args.hot, tr.batch, tr.num_rows, conf, args.memory)
    if args.timeline:                   # the testbench appends a line per run (engine_tb.py)
        if args.memory != "ddr4":
            raise BatchError("--timeline", "needs the DDR4 ranks (--memory ddr4)")
        try:
            open(args.timeline, "w").close()
        except OSError as e:
            raise BatchError("--timeline", f"cannot write {args.timeline}: {e.strerror}") from None
    # (the testbench appends to REFREE_TIMELINE; set for these runs only)
    timeline_before = os.environ.pop("REFREE_TIMELINE", None)
    if args.timeline:
        os.environ["REFREE_TIMELINE"] = os.path.abspath(args.timeline)
    d = conf.dram
    where = (f"{d.ranks} rank(s) of {d.grade}" if args.memory == "ddr4"
             else "a generic memory port (random latency and backpressure)")
    print(f"one training step ({args.optimizer}, sum pooling) of {title}, B={tr.batch.batch_size}, T={args.tables}, "
          f"D={conf.dim}, on the engine's RTL ({args.sim}) on {where}, and on the golden model")
    try:
        per_mode = rtl_check(tr.batch, tr.num_rows, conf, args.sim, optimizer=args.optimizer,
                             memory=args.memory, host_io=args.host_io, waves=args.waves, hot_rows=hot_rows)
    except AssertionError as e:         # a difference, or a job the testbench stopped
        print(f"refree: error: {e}", file=sys.stderr)
        return 1
    finally:
        os.environ.pop("REFREE_TIMELINE", None)
        if timeline_before is not None:
            os.environ["REFREE_TIMELINE"] = timeline_before
    ranks = d.ranks if args.memory == "ddr4" else None
    print(format_counters(per_mode, ranks))
    print(format_step_summary(per_mode))
    if args.json:
        report = {"trace": args.trace, "title": title, "batch_size": tr.batch.batch_size, "tables": args.tables,
                  "seed": args.seed, "dim": conf.dim, "memory": args.memory, "ranks": ranks,
                  "grade": d.grade if ranks else None, "optimizer": args.optimizer,
                  "modes": check_report(per_mode, ranks)}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


def cmd_convert(args):
    """A dlrm_datasets file (or the selected part of it) -> a batch file .npz."""
    if not is_dlrm_file(args.file):
        raise BatchError("file", f"{args.file!r} is not named as a dlrm_datasets file (.pt.gz or .pt)")
    _check_writable("out", args.out, ".npz")
    args.batch = args.file
    batch, title, rows = _read_batch(args, scratch_dir=os.path.dirname(os.path.abspath(args.out)))
    _write_atomically(args.out, lambda tmp: save_batch(tmp, batch))
    print(json.dumps({"from": title, "out": str(args.out), "batch_size": batch.batch_size,
                      "tables": batch.num_tables, "lookups": len(batch.indices), "rows": list(rows),
                      "offsets": "int32" if batch.offsets_int32 else "int64",
                      "indices": "int32" if batch.indices_int32 else "int64"}))


def cmd_profile(args):
    """FAE's profile of a stream of batches (golden/hot_rows.py)."""
    from refree.golden.hot_rows import profile, table_traffic
    from refree.golden.traces import trace_stream
    if args.index_dtype != "int64":
        raise UsageError("--index-dtype does not change a profile (it counts rows, not bytes)")
    if args.batches < 2:
        raise BatchError("--batches", f"must be at least 2 (profiled, then judged), not {args.batches}")
    if args.out is not None:
        _check_writable("--out", args.out, ".npz")
    k = args.profile_batches if args.profile_batches is not None else args.batches // 2
    options = ({"batch_index": args.batch_index} if args.trace == "movielens" else {})
    batches, rows = trace_stream(args.trace, TRACE_BATCH_SIZE if args.batch_size is None else args.batch_size,
                                 args.tables, args.batches, seed=args.seed, **options)
    hot, rep = profile(batches, rows, k, args.sample, args.budget, args.dim, args.seed)
    limits = _limits(_config(args))
    try:        # (the counts split the batches as the engine would: a bag too long for it stops them)
        rep["traffic_after"] = {mode: table_traffic(batches[k:], hot, mode, limits) for mode in MODES}
    except BatchError as e:
        rep["traffic_after"] = None
        rep["traffic_error"] = f"{e.field}: {e.message} (--config can raise the engine's part limits)"
    if args.out:
        _write_atomically(args.out, lambda tmp: np.savez(tmp, **{f"hot_{t}": r for t, r in enumerate(hot.rows)}))
    if args.json:
        print(json.dumps({"trace": args.trace, "batch_size": batches[0].batch_size, "tables": args.tables,
                          "batches": args.batches, "profile_batches": k, **rep}))
    else:
        _print_profile(args, batches[0].batch_size, k, rep)


def _print_profile(args, B, k, rep):
    print(f"FAE profile of trace {args.trace}: {args.batches} batches of B={B}, T={args.tables}; "
          f"the first {k} profiled on {rep['sampled_inputs']} of their {rep['profiled_inputs']} inputs "
          f"({args.sample:.0%}), a budget of {args.budget:,d} bytes = {rep['capacity_rows']:,d} rows of D={args.dim}")
    print(f"hot rows per table: {', '.join(f'{n:,d}' for n in rep['hot_rows'])} ({sum(rep['hot_rows']):,d} in all)")
    for label, c in (("profiled batches", rep["profiled"]), ("later batches", rep["after"])):
        print(f"  {label:18s} hot lookups {c['hot_lookups']:,d} of {c['lookups']:,d} ({c['hot_lookup_fraction']:.1%}), "
              f"hot inputs {c['hot_inputs']:,d} of {c['inputs']:,d} ({c['hot_input_fraction']:.1%})")
    if rep["traffic_after"] is None:
        print(f"table-row traffic not counted: {rep['traffic_error']}")
        return
    print("table-row accesses in DRAM over the later batches (rows; SGD, a training step a batch), "
          "without -> with the hot store (its load and flush included), and those it serves:")
    for mode, tr in rep["traffic_after"].items():
        print(f"  {mode:9s} {tr['dram']:>10,d} -> {tr['dram_hot']:>10,d} ({tr['dram_hot'] / max(tr['dram'], 1):.1%}), "
              f"{tr['hits']:,d} served (load {tr['load']:,d}, flush {tr['flush']:,d})")


def _check_writable(option, path, suffix):
    """An output file: its suffix, and a folder that exists and takes writes."""
    if not str(path).endswith(suffix):
        raise BatchError(option, f"{path!r} must end in {suffix}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise BatchError(option, f"cannot write {path!r}: no writable folder {folder}")


def _write_atomically(path, write):
    """``write(tmp)`` into a file beside ``path``, then move it there: no partial output."""
    tmp = f"{path}.part{os.path.splitext(path)[1]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise BatchError("out", f"cannot write {path!r}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cmd_generate(args):
    from .generate import generate
    try:
        vpath, manifest = generate(args.config, args.out, args.top)
    except (ValueError, TypeError) as e:
        raise BatchError("--config", str(e)) from None
    print(f"wrote {vpath}, {os.path.splitext(vpath)[0]}.json ({len(manifest['ports'])} ports) "
          f"and the register map {', '.join(manifest['register_map'])}")


def _int_list(option, text, allowed=None, empty=False):
    """gen/runs.py's int_list, its ValueError a usage error."""
    from .runs import int_list
    try:
        return int_list(option, text, allowed, empty)
    except ValueError as e:
        raise UsageError(str(e)) from None


def cmd_sweep(args):
    import math
    import shlex
    from .bench_report import prepare_dir, progress_bar, speedups, step_time, write_report
    from .runs import check_points
    from .sweep import default_cache_dir, grid, run_grid
    traces = args.traces.split(",")
    for t in traces:
        if t not in TRACE_NAMES:
            raise UsageError(f"--traces: unknown trace {t!r} (known: {', '.join(TRACE_NAMES)})")
    try:
        alphas = [float(a) for a in args.alphas.split(",")]
    except ValueError:
        raise UsageError(f"--alphas: comma-separated numbers, not {args.alphas!r}") from None
    if any(not (a > 0 and math.isfinite(a)) for a in alphas):
        raise UsageError("--alphas: a Zipf exponent must be positive and finite")
    if args.tables < 1 or args.workers < 1 or args.seed < 0:
        raise UsageError("--tables and --workers must be positive, --seed not negative")
    limits = [{"max_distinct_rows": v}
              for v in _int_list("--max-distinct-rows", args.max_distinct_rows, empty=True)] or [{}]
    if args.max_bag_len is not None:
        limits = [dict(lim, max_bag_len=args.max_bag_len) for lim in limits]
    points = grid(args.kind, traces, _int_list("--batch-sizes", args.batch_sizes), _int_list("--ranks", args.ranks),
                  tables=args.tables, lanes=_int_list("--lanes", args.lanes, (16, 32, 64), empty=True) or [None],
                  limits=limits, alphas=alphas, seed=args.seed, optimizer=args.optimizer)
    try:
        check_points(points)
    except (ValueError, TypeError) as e:
        raise BatchError("the grid's configuration", str(e)) from None
    cache = None if args.no_cache else (args.cache or default_cache_dir())
    if cache:                           # (the outputs checked before any run)
        prepare_dir("--cache", cache)
    if args.out:
        prepare_dir("--out", args.out)
    print(f"{len(points)} runs ({args.kind}) on " + (f"the Dask scheduler {args.scheduler}" if args.scheduler else
                                                     f"a local Dask cluster of {args.workers} workers")
          + (f"; cache {cache}" if cache else "; no cache"), flush=True)
    records, errors, stats = run_grid(points, scheduler=args.scheduler, workers=args.workers, cache_dir=cache,
                                      progress=progress_bar(len(points)))
    print(f"{stats['cached']} from the cache, {stats['computed']} computed, {stats['failed']} failed")
    what = {"rtl": "cycles", "model": "model cycles"}.get(args.kind, "roofline cycles (a lower bound)")
    print(f"{'trace':<10s} {'options':<22s} {'B':>7s} {'R':>2s} {'config':<28s}  step {what}, speed-up over baseline")
    for p, rec in zip(points, records):
        if rec is None:
            continue
        sp = speedups(rec)
        cells = "  ".join(f"{m} {step_time(rec, m):,.0f}" + (f" ({sp[m]:.2f}x)" if m in sp and m != "baseline" else "")
                          for m in rec["modes"])
        opts = ",".join(f"{k}={v}" for k, v in p["options"].items())
        conf = ",".join(f"{k}={v}" for sec in p["config"].values() for k, v in sec.items()) or "defaults"
        print(f"{p['trace']:<10s} {opts:<22s} {p['batch_size']:>7d} {p['ranks']:>2d} {conf:<28s}  {cells}")
    for i, err in sorted(errors.items()):
        print(f"refree: error: run {i} ({points[i]['trace']}, B={points[i]['batch_size']}, "
              f"R={points[i]['ranks']}): {err}", file=sys.stderr)
    if args.out:
        done = [r for r in records if r is not None]
        failed = [f"{points[i]['trace']}, B = {points[i]['batch_size']}, R = {points[i]['ranks']}: {err}"
                  for i, err in sorted(errors.items())]
        plots = write_report(done, args.out, args.title, shlex.join(["refree", *sys.argv[1:]]), failed=failed)
        print(f"report: {os.path.join(args.out, 'report.md')} (and report.json, {', '.join(plots) or 'no plots'})")
    return 1 if errors else 0


def cmd_train(args):
    from .train import TrainConfig, train
    if args.skip_window is not None and args.skip_window < 1:
        raise UsageError("--skip-window must be positive")
    if args.skip_window is not None and args.skip is None and not args.skip_sweep:
        raise UsageError("--skip-window is Slipstream's: give --skip or --skip-sweep")
    common = dict(epochs=args.epochs, batch_size=args.batch_size, dim=args.dim, lr=args.lr, dense_lr=args.dense_lr,
                  seed=args.seed, max_steps=args.max_steps, test_samples=args.test_samples,
                  skip_window=args.skip_window, rtl_steps=args.rtl_steps, rtl_config=args.config)
    if args.config is not None and not args.rtl_steps:
        raise UsageError("--config is the RTL's chip: give --rtl-steps")
    if args.config is not None:
        from .config import load_config
        try:
            load_config(args.config)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if bool(args.skip_sweep) != bool(args.out):
        raise UsageError("--skip-sweep and --out go together (the report of a sweep)")
    if args.skip_sweep:
        from .train import slipstream_report
        try:
            targets = [float(x) for x in args.skip_sweep.split(",")]
            TrainConfig(mode=args.mode, **common)
            for t in targets:
                TrainConfig(mode=args.mode, skip=t, **common)
        except ValueError as e:
            raise UsageError(f"--skip-sweep: {e}") from None
        import shlex
        from .bench_report import prepare_dir
        prepare_dir("--out", args.out)
        try:
            slipstream_report(targets, args.out, shlex.join(["refree", *sys.argv[1:]]), mode=args.mode, **common)
        except ValueError as e:
            raise UsageError(str(e)) from None
        print(f"report: {os.path.join(args.out, 'report.md')}")
        return 0
    try:
        cfg = TrainConfig(mode=args.mode, skip=args.skip, **common)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not args.json:
        print(f"training on MovieLens (the first 80 % of samples by time; the last 20 % held out), tables by "
              f"{'nn.EmbeddingBag + SGD' if args.mode == 'torch' else 'the golden step in ' + args.mode}, "
              f"B={cfg.batch_size}, D={cfg.dim}, lr {cfg.lr}, dense Adam {cfg.dense_lr}, seed {cfg.seed}", flush=True)
    try:
        res = train(cfg, out=(lambda line: None) if args.json else (lambda line: print(line, flush=True)))
    except ValueError as e:             # (a batch beyond the training samples)
        raise UsageError(str(e)) from None
    if res["slipstream"] is not None and not args.json:
        r = res["slipstream"]
        T = "not found (fewer steps than the window)" if r["threshold"] is None else f"{r['threshold']:.4g}"
        print(f"skipped {r['skipped_updates']:,d} of {r['row_updates']:,d} row updates ({r['skip_fraction']:.1%}; "
              f"of the hot rows' {r['hot_skip_fraction']:.1%}; T = {T}, {r['hot_rows']:,d} hot rows, window "
              f"{r['window']}): {r['beats_saved']:,d} DRAM beats saved")
    if res["rtl"] and not args.json:
        r = res["rtl"]
        print(f"RTL: the last {len(r)} steps of epoch 1 on the chip, bit for bit the golden step's; backward job "
              f"{np.mean([x['backward_cycles'] for x in r]):,.0f} cycles a step (the stale set's load "
              f"{np.mean([x['stale_load_cycles'] for x in r]):,.0f} of them; forward "
              f"{np.mean([x['forward_cycles'] for x in r]):,.0f}), {sum(x['stale_skipped'] for x in r):,d} "
              f"stale lookups ({sum(x['stale_rows_skipped'] for x in r):,d} row updates) skipped, "
              f"{sum(x['stale_left_out'] for x in r):,d} stale rows left out of the set")
    if args.json:
        print(json.dumps({"mode": args.mode, "epochs": res["epochs"], "slipstream": res["slipstream"],
                          "rtl": res["rtl"]}))
    return 0


def cmd_synth(args, rest):
    from . import synth
    try:
        return synth.main(rest, epilog=EXIT_CODES)
    except synth.ToolError as e:        # Yosys or nextpnr failed; the message names its log
        print(f"refree: error: {e}", file=sys.stderr)
        return 1


EXIT_CODES = ("exit status: 0 done (and, for checks, every check passed); 1 a check failed (the RTL "
              "and the golden model differ) or a tool failed (Yosys, nextpnr); 2 bad input or usage, "
              "with a message 'refree: error: ...'")

BATCH_HELP = ("batch file .npz: indices and offsets (int64 or int32; TBE layout: table-major, T*B+1 "
              "offsets), batch_size B, optional per_sample_weights (float32); see the README's 'Batch "
              "files'; or one of Meta's dlrm_datasets files (.pt.gz: indices, offsets, lengths), with "
              "--select-tables and a window of samples")
TRACE_BATCH_SIZE = 128

POOLING_HELP = ("how each bag pools its rows: sum (default) or mean, one mode for every table or one "
                "per table, comma-separated (sum,mean)")


def _trace_options(parser, trace_default, trace_help):
    """The options that pick a trace batch (see _trace_batch)."""
    parser.add_argument("--trace", choices=TRACES, default=trace_default, help=trace_help)
    parser.add_argument("--batch-size", type=int,
                        help=f"bags per table, B (default {TRACE_BATCH_SIZE}; of a dlrm_datasets file: a window "
                             f"of B of its samples, default all)")
    parser.add_argument("--tables", type=int, default=1,
                        help="tables T (default 1; MovieLens has 3: history, user, liked history)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic traces")
    parser.add_argument("--batch-index", type=int, default=0,
                        help="MovieLens, or a dlrm_datasets file: which window of B consecutive samples "
                             "(default 0)")
    parser.add_argument("--index-dtype", choices=["int64", "int32"], default="int64",
                        help="width of the trace's offsets and indices (default int64); the NMP reads "
                             "int32 as it is, half the input beats")


def _dlrm_options(parser, windows):
    """The options that select from a dlrm_datasets file (the trace options give the window
    where a command has them)."""
    parser.add_argument("--select-tables", metavar="LIST",
                        help="a dlrm_datasets file (.pt.gz): the tables to take, comma-separated numbers "
                             "(default all), in the order given")
    if windows:
        parser.add_argument("--batch-size", type=int,
                            help="a dlrm_datasets file: a window of B of its samples (default all)")
        parser.add_argument("--batch-index", type=int, default=0,
                            help="a dlrm_datasets file: which window of B samples (default 0)")


def _memory_option(parser):
    parser.add_argument("--memory", choices=["ddr4", "port"], default="ddr4",
                        help="RTL: the whole buffer chip LrdimmNmp on the DDR4 ranks of [dram] "
                             "(default), or the bare engine on a generic memory port with random "
                             "latency and backpressure")
    parser.add_argument("--host-io", action="store_true",
                        help="RTL on the buffer chip: load the batch and tables through the host's "
                             "DDR4 writes and read the results back through its reads (default: "
                             "preload the DRAM models, a simulator backdoor; faster)")


def build_parser():
    p = argparse.ArgumentParser(prog="refree", description=__doc__.splitlines()[0], epilog=EXIT_CODES)
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="redundancy report of a batch in the three modes", epilog=EXIT_CODES)
    a.add_argument("batch", nargs="?", help=BATCH_HELP + " (or give --trace)")
    _trace_options(a, None, "build the batch from a trace instead")
    a.add_argument("--pooling", default="sum", help=POOLING_HELP)
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument("--engine-limits", action="store_true",
                   help="split the batch into parts by the configured engine's limits "
                        "(default: the whole batch as one part)")
    a.add_argument("--config", help="engine configuration TOML (see gen/default_config.toml)")
    _dlrm_options(a, windows=False)

    step_help = "run one embedding training step (forward, backward, update) on a batch"
    s = sub.add_parser("step", help=step_help, description=step_help, epilog=EXIT_CODES)
    s.add_argument("batch", help=BATCH_HELP)
    _dlrm_options(s, windows=True)
    s.add_argument("--table", required=True,
                   help="the embedding tables, float32 (rows, D): one table as .npy, or T tables as "
                        ".npz holding table_0 .. table_{T-1}")
    s.add_argument("--grad", required=True,
                   help="upstream gradient of the pooled output, .npy float32 (B, T*D): bag b of "
                        "table t in row b, columns t*D .. t*D+D-1")
    s.add_argument("--lr", type=float, required=True,
                   help="learning rate of the update (a finite number, rounded once to binary32)")
    s.add_argument("--out", required=True,
                   help="output folder: pooled.npy, table.npy or table.npz (as --table), and "
                        "state.npz under Adagrad; written only when the whole step succeeded")
    s.add_argument("--pooling", default="sum", help=POOLING_HELP)
    s.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="sgd (default), or rowwise-adagrad (dedup and refree modes; state in --state)")
    s.add_argument("--eps", type=float, default=1e-8,
                   help="row-wise Adagrad's epsilon, added to the root of the state (default 1e-8)")
    s.add_argument("--state", help="Adagrad state .npz (state_0 ..) from an earlier step")
    s.add_argument("--backward", choices=BACKWARDS, default="rows",
                   help="rows: each distinct row merged over the whole batch and updated once, "
                        "row-wise Adagrad on any batch, as the engine runs it (default); parts: the "
                        "earlier rule, a row updated once per forward part (the golden model only: "
                        "--engine rtl refuses it in dedup and refree, exit 2)")
    s.add_argument("--mode", choices=MODES, default="refree",
                   help="baseline: PyTorch's per-lookup order; dedup: each distinct row read once; "
                        "refree: distinct rows and shared partial sums (default)")
    s.add_argument("--engine", choices=["golden", "rtl"], default="golden",
                   help="golden: the numpy model (default); rtl: the generated Verilog in a simulator")
    s.add_argument("--sim", choices=["verilator", "icarus"], default="verilator",
                   help="simulator of --engine rtl (default verilator; icarus is much slower)")
    s.add_argument("--config", help="engine configuration TOML: part limits (both engines) and "
                                    "the RTL's parameters (see gen/default_config.toml)")
    _memory_option(s)
    s.add_argument("--waves", metavar="FILE",
                   help="--engine rtl: also write every signal of the step (both jobs) to FILE: VCD "
                        "under Verilator, FST under Icarus, for GTKWave or Surfer (a simulator build of "
                        "its own, slower)")

    r = sub.add_parser("rtl-check", help="main job: one training step per mode on the RTL, "
                                         "checked against the golden model, counters side by side",
                       epilog=EXIT_CODES)
    _trace_options(r, "movielens", "the trace to take the batch from")
    r.add_argument("--sim", choices=["verilator", "icarus"], default="verilator",
                   help="simulator (default verilator; icarus is much slower)")
    r.add_argument("--config", help="engine configuration TOML (see gen/default_config.toml)")
    r.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="rowwise-adagrad runs the dedup and refree modes (baseline has no Adagrad)")
    _memory_option(r)
    r.add_argument("--ranks", type=int, help="ranks of the DRAM side (overrides the configuration)")
    r.add_argument("--grade", help="DDR4 speed grade (overrides the configuration)")
    r.add_argument("--json", metavar="FILE",
                   help="also write the counters, bounds and figures of every mode and job to FILE")
    r.add_argument("--timeline", metavar="FILE",
                   help="DDR4 only: also write when the data bus moved, a JSON line per mode run "
                        "(its mode; each job's span [first, last) in clocks from the start of the "
                        "simulation, as the host saw it, hand-overs included; the clock of every RD and "
                        "WR command of each rank, its data CL or CWL clocks later)")
    r.add_argument("--waves", metavar="FILE",
                   help="also write every signal of each mode's step to FILE-MODE (with FILE's "
                        "suffix): VCD under Verilator, FST under Icarus, for GTKWave or Surfer (a "
                        "simulator build of its own, slower; large for big batches)")
    r.add_argument("--hot", metavar="FILE.npz",
                   help="FAE's hot set (refree profile --out): each step runs between a load of the rows "
                        "the chip's hot-row store holds (a --config with [hot] beats) and a flush, checked "
                        "against the golden model: outputs unchanged, the store's hits its counts")

    c = sub.add_parser("convert", help="a dlrm_datasets file (.pt.gz), or the tables and samples "
                                       "selected from it, as a batch file .npz", epilog=EXIT_CODES)
    c.add_argument("file", help="one of Meta's dlrm_datasets files (gzip around torch.save of indices, "
                                "offsets, lengths); decompressed beside the output and memory-mapped")
    c.add_argument("out", help="the batch file to write (.npz; offsets and indices keep the file's dtype)")
    _dlrm_options(c, windows=True)

    from refree.golden.hot_rows import DEFAULT_BUDGET, DEFAULT_SAMPLE
    f = sub.add_parser("profile", help="FAE's profiler: the hot rows of a stream of batches, found on a "
                                       "sample of the earlier inputs, and how they cover the later ones",
                       epilog=EXIT_CODES)
    _trace_options(f, "movielens", "the trace whose consecutive batches are profiled")
    f.add_argument("--batches", type=int, default=20, help="consecutive batches of the stream (default 20)")
    f.add_argument("--profile-batches", type=int,
                   help="the first K batches are profiled, the rest judge the hot set (default half)")
    f.add_argument("--sample", type=float, default=DEFAULT_SAMPLE,
                   help=f"fraction of the profiled inputs sampled (default {DEFAULT_SAMPLE}, FAE's)")
    f.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                   help=f"bytes of hot rows (default {DEFAULT_BUDGET:,d}: the row store's size; FAE's "
                        f"256 MB is a GPU's)")
    f.add_argument("--dim", type=int, default=64, help="D, floats a row (default 64): rows = budget / (4 D)")
    f.add_argument("--config", help="engine configuration TOML: the part limits of the traffic counts "
                                    "(see gen/default_config.toml)")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.add_argument("--out", metavar="FILE.npz", help="also write the hot rows, hot_0 .. hot_{T-1}")

    g = sub.add_parser("generate", help="write the engine's Verilog and a JSON manifest", epilog=EXIT_CODES)
    g.add_argument("--config", help="TOML file over the defaults (see gen/default_config.toml)")
    g.add_argument("-o", "--out", required=True, help="output folder")
    g.add_argument("--top", choices=["engine", "core", "lrdimm"], default="engine",
                   help="engine: the bare engine with its memory port; core: the engine on the "
                        "DDR4 ranks of [dram] (rank command engines, command and data pins); "
                        "lrdimm: the whole buffer chip (DDR4 host interface, NMP window, core)")

    w = sub.add_parser("sweep", help="a grid of runs (bounds by the golden model, the performance model, or the RTL) on a Dask "
                                     "cluster, each run cached by its inputs; prints the steps and their "
                                     "speed-ups, --out writes the report", epilog=EXIT_CODES)
    w.add_argument("--kind", choices=["bounds", "model", "rtl"], default="bounds",
                   help="bounds: the golden model's bounds of each job, any batch size (default); model: "
                        "the bounds and each job's cycles by the performance model calibrated to the RTL "
                        "(golden/perf; SGD; a minute or so a job at Meta's batch sizes); rtl: the chip's "
                        "RTL, checked bit for bit (minutes a run)")
    w.add_argument("--traces", default="movielens", help=f"comma-separated, of {', '.join(TRACE_NAMES)}")
    w.add_argument("--batch-sizes", default="128", help="comma-separated B (default 128)")
    w.add_argument("--ranks", default="1", help="comma-separated R (default 1)")
    w.add_argument("--lanes", default="", help="comma-separated fold lanes (16, 32, 64; default the "
                                               "configuration's)")
    w.add_argument("--max-distinct-rows", default="", help="comma-separated part limits (default the "
                                                           "configuration's)")
    w.add_argument("--max-bag-len", type=int, help="the longest bag accepted (Meta's batches have bags "
                                                   "beyond the default 64)")
    w.add_argument("--alphas", default="1.05", help="comma-separated Zipf exponents (zipf only; default 1.05)")
    w.add_argument("--tables", type=int, default=1, help="tables T (default 1)")
    w.add_argument("--seed", type=int, default=0, help="seed of the synthetic traces (default 0)")
    w.add_argument("--optimizer", choices=["sgd", "rowwise-adagrad"], default="sgd",
                   help="the step's optimizer (default sgd; row-wise Adagrad has no baseline)")
    w.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler (default: a local cluster)")
    w.add_argument("--workers", type=int, default=2, help="workers of the local cluster (default 2)")
    w.add_argument("--cache", metavar="DIR", help="the runs' cache (default $XDG_CACHE_HOME/refree/sweep)")
    w.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    w.add_argument("--out", metavar="DIR", help="write the report there: report.md, report.json, PNG plots")
    w.add_argument("--title", default="refree sweep", help="the report's title")

    tr = sub.add_parser("train", help="a small DLRM-style model on MovieLens, its embedding tables trained by "
                                      "the project's step in a mode (or PyTorch's, --mode torch): the "
                                      "held-out AUC and log loss per epoch", epilog=EXIT_CODES)
    tr.add_argument("--mode", choices=["baseline", "dedup", "refree", "torch"], default="refree",
                    help="whose step trains the tables: the golden model in a mode, or nn.EmbeddingBag + SGD "
                         "(default refree)")
    tr.add_argument("--epochs", type=int, default=1, help="passes over the training samples (default 1)")
    tr.add_argument("--max-steps", type=int, help="at most this many batches an epoch (default all)")
    tr.add_argument("--batch-size", type=int, default=128, help="samples a batch, B (default 128)")
    tr.add_argument("--dim", type=int, default=16, help="D, floats a row (default 16)")
    tr.add_argument("--lr", type=float, default=20.0, help="SGD's learning rate of the tables (default 20: the "
                                                           "loss is the batch's mean)")
    tr.add_argument("--dense-lr", type=float, default=3e-3, help="Adam's learning rate of the dense part "
                                                                 "(default 3e-3)")
    tr.add_argument("--seed", type=int, default=0, help="seed of the initial tables and weights (default 0)")
    tr.add_argument("--test-samples", type=int, help="held-out samples scored (default all of the last 20 %%)")
    tr.add_argument("--skip", type=float, help="skip stale updates (Slipstream, golden/slipstream.py): the "
                                               "fraction of the hot rows' updates to skip, T searched for it")
    tr.add_argument("--skip-window", type=int, help="Slipstream's window W, batches (default 50)")
    tr.add_argument("--skip-sweep", metavar="LIST", help="with --out: the PyTorch reference, the exact run and "
                                                         "one run per skip target (comma-separated): the report")
    tr.add_argument("--out", metavar="DIR", help="with --skip-sweep: write report.md, report.json, slipstream.png")
    tr.add_argument("--rtl-steps", type=int, default=0, metavar="N",
                    help="the last N steps of the first epoch also on the RTL (the buffer chip), checked bit for "
                         "bit against the golden step; with --skip, Slipstream's stale rows are the engine's "
                         "stale set (default 0; a chip build of its own, minutes a step)")
    tr.add_argument("--config", metavar="FILE.toml", help="with --rtl-steps: the chip's configuration (default "
                                                          "the default one, with [slipstream] entries = 8192, "
                                                          "ways = 8 when skipping)")
    tr.add_argument("--json", action="store_true", help="print one JSON object")

    sub.add_parser("bench", help="the main job on the RTL over traces and ranks, with the report "
                                 "(--out: Markdown, JSON, plots); its options: refree bench --help",
                   add_help=False, epilog=EXIT_CODES)
    sub.add_parser("synth", help="Yosys/nextpnr figures of the arithmetic units "
                                 "(--units lrdimm: the whole default buffer chip); "
                                 "its options: refree synth --help", add_help=False)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["synth"]:
        return cmd_synth(None, argv[1:])
    if argv[:1] == ["bench"]:
        from .bench_dram import main as bench_main
        return bench_main(argv[1:], epilog=EXIT_CODES)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = {"analyze": cmd_analyze, "step": cmd_step, "generate": cmd_generate,
                  "rtl-check": cmd_rtl_check, "convert": cmd_convert, "profile": cmd_profile,
                  "sweep": cmd_sweep, "train": cmd_train}[args.command](args)
    except UsageError as e:
        parser.error(str(e))
    except BatchError as e:
        print(f"refree: error: {e}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
