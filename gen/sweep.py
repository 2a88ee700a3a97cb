"""``refree sweep``: a grid of runs on Dask, each run's record cached by its inputs.

The grid is the product of traces x batch sizes x ranks x fold lanes x part limits x
Zipf exponents (Zipf's only) of one kind of run (:mod:`refree.gen.runs`: ``bounds``, the
golden model's bounds of every mode, or ``rtl``, the chip's RTL checked bit for bit).  It
runs on a Dask cluster: a local one by default (``--workers`` processes), or the scheduler at
``--scheduler ADDRESS``.  RTL runs of one chip (one configuration and one rank count) share
one Verilator build, so they go to one task, one after another (two simulations of one
build at once would race on its folder); bounds runs are a task each.

Cache: a run's record is stored as ``CACHE/KEY.json``, KEY the SHA-256 of the point (every
input of the run, :func:`refree.gen.runs.point`) and of the package's source code (so that a
changed model or chip is never answered from an older one's records).  A repeated grid
computes nothing; ``--no-cache`` ignores and keeps no records.  Default folder:
``$XDG_CACHE_HOME/refree/sweep`` (``~/.cache/refree/sweep``).
"""
import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from .runs import point, run_point, trace_options

__all__ = ["grid", "point_key", "code_fingerprint", "run_grid", "default_cache_dir"]


#: What a run's record depends on: the chip, the golden model and its data, the testbenches,
#: and of gen/ the configuration and the run itself (not the command line or the reports,
#: whose changes leave every record as it was).
FINGERPRINTED = ("hw", "golden", "verif", "gen/config.py", "gen/default_config.toml", "gen/rtl.py", "gen/runs.py")


@lru_cache(maxsize=1)
def code_fingerprint():
    """SHA-256 of the sources and data a run depends on (:data:`FINGERPRINTED`)."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for name in FINGERPRINTED:
        top = root / name
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if path.is_file() and path.suffix in (".py", ".toml", ".csv", ".gz", ".npz", ".json"):
                h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def point_key(p):
    """The cache key of a point: its inputs and the code that runs it."""
    text = json.dumps(p, sort_keys=True) + code_fingerprint()
    return hashlib.sha256(text.encode()).hexdigest()


def default_cache_dir():
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "refree", "sweep")


def grid(kind, traces, batch_sizes, ranks, *, tables=1, lanes=(None,), limits=(None,), alphas=(1.05,), seed=0,
         batch_index=0, index_dtype="int64", optimizer="sgd"):
    """The points of the grid (see the module docstring).  ``lanes``: fold lanes (None: the
    default); ``limits``: ``{parts key: value}`` overrides (None: the defaults)."""
    out = []
    for trace in traces:
        for B in batch_sizes:
            for R in ranks:
                for lane in lanes:
                    for lim in limits:
                        for alpha in (alphas if trace == "zipf" else (None,)):
                            options = trace_options(trace, batch_index, seed, alpha)
                            config = {}
                            if lane is not None:
                                config["engine"] = {"fold_lanes": lane}
                            if lim:
                                config["parts"] = dict(lim)
                            out.append(point(kind, trace, B, tables=tables, ranks=R, options=options,
                                             index_dtype=index_dtype, optimizer=optimizer, config=config))
    return out


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None                     # (missing or damaged: computed again)


def _store(path, record):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)               # (whole or not at all, if two sweeps share the folder)


def _run_group(points):
    """Run points one after another (a Dask task): [(record or None, error or None)]; a run
    that fails, whatever the reason, leaves the others' records."""
    out = []
    for p in points:
        try:
            out.append((run_point(p), None))
        except Exception as e:          # noqa: BLE001 (reported by the sweep, never cached)
            out.append((None, f"{type(e).__name__}: {e}"))
    return out


def _groups(points):
    """RTL points by chip (configuration and ranks: one build each, one task); every bounds
    point alone."""
    by_build, out = {}, []
    for i, p in enumerate(points):
        if p["kind"] == "rtl":
            by_build.setdefault((json.dumps(p["config"], sort_keys=True), p["ranks"]), []).append(i)
        else:
            out.append([i])
    return out + list(by_build.values())


def run_grid(points, *, scheduler=None, workers=2, processes=True, cache_dir=None, progress=None):
    """Run ``points`` (cached ones from ``cache_dir`` unless it is None) on Dask.

    Returns ``(records, errors, stats)``: ``records[i]`` the record of ``points[i]`` (None
    when it failed), ``errors`` ``{i: message}``, ``stats`` ``{"cached", "computed",
    "failed"}``.  ``progress``: a callable taking the number of points done so far."""
    records, errors = [None] * len(points), {}
    keys = [point_key(p) for p in points]
    todo = []
    for i, k in enumerate(keys):
        cached = _load(os.path.join(cache_dir, k + ".json")) if cache_dir else None
        if cached is not None:
            records[i] = cached
        else:
            todo.append(i)
    cached_count = len(points) - len(todo)
    done = cached_count
    if progress:
        progress(done)
    if todo:
        from dask.distributed import Client, LocalCluster, as_completed
        from refree.golden.errors import BatchError
        cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                                                      dashboard_address=None)
        try:
            try:
                client = Client(scheduler or cluster, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise BatchError("--scheduler", f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
            with client:
                groups = _groups([points[i] for i in todo])
                futures = {client.submit(_run_group, [points[todo[j]] for j in g], pure=False): g for g in groups}
                for fut in as_completed(futures):
                    results = fut.result() if fut.exception() is None else \
                        [(None, f"the task failed: {fut.exception()!r}")] * len(futures[fut])
                    for j, (rec, err) in zip(futures[fut], results):
                        i = todo[j]
                        if err is not None:
                            errors[i] = err
                        else:
                            records[i] = rec
                            if cache_dir:
                                _store(os.path.join(cache_dir, keys[i] + ".json"), rec)
                    done += len(futures[fut])
                    if progress:
                        progress(done)
        finally:
            if cluster is not None:
                cluster.close()
    return records, errors, {"cached": cached_count, "computed": len(todo) - len(errors), "failed": len(errors)}
