"""FAE's profiler (golden/hot_rows.py), the stream of batches it profiles and the windows that
cut it (golden/traces.py trace_stream, Batch.window), against plain-Python loops."""
import json
from collections import Counter

import numpy as np
import pytest

from refree.gen.cli import main
from refree.golden.batch import Batch
from refree.golden.errors import BatchError
from refree.golden.hot_rows import (count_accesses, coverage, hot_set, profile, sample_inputs, table_traffic,
                                    touched_rows)
from refree.golden.model import step
from refree.golden.planner import PartLimits
from refree.golden.traces import make_trace, movielens_batch, trace_stream


def random_batch(rng, B, rows, max_len=5, weighted=False):
    """Bags of 0 to max_len lookups (some empty) over tables of ``rows`` rows, skewed."""
    bags = [[int(r) for r in rng.zipf(1.5, rng.integers(0, max_len + 1)) % n] for n in rows for _ in range(B)]
    idx = np.array([r for b in bags for r in b], np.int64)
    offs = np.cumsum([0] + [len(b) for b in bags]).astype(np.int64)
    return Batch(idx, offs, B, rng.standard_normal(len(idx)).astype(np.float32) if weighted else None), bags


def test_a_window_is_its_samples_of_every_table():
    rng = np.random.default_rng(0)
    batch, bags = random_batch(rng, 12, [9, 5, 7], weighted=True)
    batch = batch.with_index_dtype(np.int32)
    T, B = 3, 12
    for size, k in [(4, 0), (4, 2), (5, 1), (12, 0), (1, 11)]:
        w = batch.window(size, k)
        want = [bags[t * B + s] for t in range(T) for s in range(k * size, (k + 1) * size)]
        assert w.batch_size == size and w.num_tables == T
        assert [list(w.indices[w.offsets[i]:w.offsets[i + 1]]) for i in range(T * size)] == want
        assert w.indices_int32 and w.offsets_int32
        lo = [batch.offsets[t * B + k * size] for t in range(T)]
        hi = [batch.offsets[t * B + (k + 1) * size] for t in range(T)]
        assert np.array_equal(w.per_sample_weights, np.concatenate([batch.per_sample_weights[a:b]
                                                                    for a, b in zip(lo, hi)]))
    for size, k in [(5, 2), (0, 0), (13, 0), (4, -1)]:
        with pytest.raises(BatchError, match="does not fit"):
            batch.window(size, k)


@pytest.mark.parametrize("name", ["zipf", "meta", "movielens"])
def test_a_stream_is_consecutive_batches_of_one_trace(name):
    batches, rows = trace_stream(name, 16, 2, 5, seed=4)
    assert len(batches) == 5 and all(b.batch_size == 16 and b.num_tables == 2 for b in batches)
    if name == "movielens":
        for k, b in enumerate(batches):
            want = movielens_batch(16, 2, batch_index=k).batch
            assert np.array_equal(b.indices, want.indices) and np.array_equal(b.offsets, want.offsets)
    else:           # one draw of 80 samples, cut in five (so the hot rows carry over)
        whole = make_trace(name, 80, 2, 4).batch
        for t in range(2):
            assert np.array_equal(np.concatenate([b.table_slice(t)[0] for b in batches]), whole.table_slice(t)[0])
    assert rows == (make_trace(name, 16, 2, 4).num_rows if name == "movielens" else make_trace(name, 80, 2, 4).num_rows)


def test_samples_are_a_uniform_draw_without_replacement():
    batches = [Batch(np.zeros(0, np.int64), np.zeros(B + 1, np.int64), B) for B in (10, 7, 13)]
    got = sample_inputs(batches, 0.25, seed=3)
    assert len(got) == 8 and len(set(got)) == 8                 # ceil(0.25 * 30)
    assert all(0 <= s < batches[k].batch_size for k, s in got)
    assert got == sample_inputs(batches, 0.25, seed=3) and got != sample_inputs(batches, 0.25, seed=4)
    assert len(sample_inputs(batches, 1e-9)) == 1 and len(sample_inputs(batches, 0.1)) == 3
    assert sample_inputs(batches, 1.0) == [(k, s) for k, b in enumerate(batches) for s in range(b.batch_size)]


def test_the_hot_set_is_the_most_counted_rows_that_fit():
    rng = np.random.default_rng(5)
    rows = [40, 25]
    batches = [random_batch(rng, 9, rows)[0] for _ in range(4)]
    sampled = sample_inputs(batches, 0.5, seed=1)
    counts = count_accesses(batches, sampled, rows)
    want = [Counter() for _ in rows]                            # plain loops
    for k, s in sampled:
        for t in range(len(rows)):
            lo, hi = batches[k].bag_range(t, s)
            want[t].update(int(r) for r in batches[k].indices[lo:hi])
    assert [dict(Counter({r: int(c) for r, c in enumerate(cnt) if c})) for cnt in counts] == [dict(w) for w in want]
    for rows_fit in (0, 1, 7, 30, 1000):
        hot = hot_set(counts, rows_fit * 4 * 8, dim=8)
        ranked = sorted(((-c, t, r) for t, w in enumerate(want) for r, c in w.items()))[:rows_fit]
        assert [sorted(r for _, tt, r in ranked if tt == t) for t in range(2)] == [list(h) for h in hot.rows]
        assert hot.capacity == rows_fit


def test_coverage_counts_hot_lookups_and_inputs_whose_every_lookup_is_hot():
    rng = np.random.default_rng(8)
    rows = [30, 12]
    batches = [random_batch(rng, 11, rows)[0] for _ in range(3)]
    hot = hot_set([np.bincount(rng.integers(0, n, 20), minlength=n) for n in rows], 15 * 4 * 4, dim=4)
    got = coverage(batches, hot)
    sets = [set(int(r) for r in h) for h in hot.rows]
    lookups = hot_lookups = hot_inputs = 0
    for b in batches:
        for s in range(b.batch_size):
            every = True
            for t in range(2):
                lo, hi = b.bag_range(t, s)
                for r in b.indices[lo:hi]:
                    lookups += 1
                    hot_lookups += int(r) in sets[t]
                    every &= int(r) in sets[t]
            hot_inputs += every
    assert (got["lookups"], got["hot_lookups"], got["hot_inputs"], got["inputs"]) == \
        (lookups, hot_lookups, hot_inputs, 33)
    assert 0 < got["hot_lookup_fraction"] < 1


def test_the_profile_is_judged_on_the_batches_after_it():
    batches, rows = trace_stream("meta", 64, 2, 6, seed=1)
    hot, rep = profile(batches, rows, 4, fraction=0.1, budget_bytes=200 * 4 * 16, dim=16, seed=2)
    assert rep["sampled_inputs"] == 26 and rep["profiled_inputs"] == 256 and sum(rep["hot_rows"]) <= 200
    assert rep["after"] == coverage(batches[4:], hot) and rep["profiled"] == coverage(batches[:4], hot)
    for kw, message in [({"fraction": 0}, "sample"), ({"budget_bytes": -1}, "budget"), ({"dim": 0}, "dim")]:
        with pytest.raises(BatchError, match=message):
            profile(batches, rows, 4, **kw)
    for k in (0, 6, 7):
        with pytest.raises(BatchError, match="profile batches"):
            profile(batches, rows, k)


def test_the_command_prints_the_profile(capsys, tmp_path):
    args = ["profile", "--trace", "zipf", "--tables", "2", "--batches", "4", "--batch-size", "32"]
    assert main([*args, "--json", "--out", str(tmp_path / "hot.npz")]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["profile_batches"] == 2 and rep["sampled_inputs"] == 4 and rep["after"]["inputs"] == 64
    assert set(rep["traffic_after"]) == {"baseline", "dedup", "refree"}
    with np.load(tmp_path / "hot.npz") as f:
        assert sorted(f.files) == ["hot_0", "hot_1"] and sum(len(f[n]) for n in f.files) == sum(rep["hot_rows"])
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "hot rows per table" in text and text.count(" served (load ") == 3
    # limits too small for a bag: the coverage still, the traffic not, and why
    (tmp_path / "c.toml").write_text("[parts]\nmax_bag_len = 1\n")
    assert main([*args, "--json", "--config", str(tmp_path / "c.toml")]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["traffic_after"] is None and "max_bag_len=1" in rep["traffic_error"] and rep["after"]["inputs"] == 64
    assert main([*args, "--config", str(tmp_path / "c.toml")]) == 0
    assert "table-row traffic not counted: " in capsys.readouterr().out
    for bad, message in [(["--batches", "1"], "at least 2"), (["--profile-batches", "4"], "1 to 3"),
                         (["--sample", "0"], "sample"), (["--budget", "-1"], "budget"), (["--dim", "0"], "dim"),
                         (["--batch-size", "0"], "batch_size"), (["--out", str(tmp_path / "no" / "h.npz")], "folder"),
                         (["--out", str(tmp_path / "h.txt")], "must end in .npz")]:
        assert main([*args, *bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith("refree: error: ") and message in err and "--config" not in err, (bad, err)
    with pytest.raises(SystemExit):     # (a usage error)
        main([*args, "--index-dtype", "int32"])


@pytest.mark.parametrize("mode", ["baseline", "dedup", "refree"])
def test_the_rows_touched_are_those_the_golden_model_counts(mode):
    """touched_rows against the golden step's counts (forward reads, update read-modify-writes),
    on batches of one part and of many."""
    rng = np.random.default_rng(6)
    rows = [30, 12]
    batch = random_batch(rng, 10, rows)[0]
    tables = [rng.standard_normal((n, 4)).astype(np.float32) for n in rows]
    grad = rng.standard_normal((10, 8)).astype(np.float32)
    for limits in (PartLimits(256, 4096, 1024, 64), PartLimits(3, 9, 5, 5)):
        counts = step(tables, batch, grad, 0.1, mode=mode, limits=limits).table_counts
        got = touched_rows(batch, mode, limits)
        assert [(len(f), len(u)) for f, u in got] == [(c["forward"]["reads"], c["update"]["rmw"]) for c in counts]
    with pytest.raises(BatchError, match="mode"):
        touched_rows(batch, "dedupe", limits)


def test_the_traffic_with_the_store_is_the_cold_rows_plus_load_and_flush():
    """Plain loops: a mode's row reads and read-modify-writes (baseline per lookup; the
    sharing modes each part's distinct rows forward, each distinct row of the batch
    backward), each served by the store when hot; the load reads every hot row once, the
    flush writes each hot row updated."""
    rng = np.random.default_rng(4)
    rows = [30, 12]
    limits = PartLimits(max_bags=4, max_lookups=12, max_distinct_rows=6, max_bag_len=5)
    batches = [random_batch(rng, 9, rows)[0] for _ in range(3)]
    hot = hot_set([np.bincount(rng.integers(0, n, 25), minlength=n) for n in rows], 10 * 4 * 4, dim=4)
    sets = [set(int(r) for r in h) for h in hot.rows]
    for mode in ("baseline", "dedup", "refree"):
        dram = cold = served = 0
        updated = set()
        for b in batches:
            for t in range(2):
                if mode == "baseline":
                    reads = updates = [int(r) for r in b.table_slice(t)[0]]
                else:
                    reads, lo, seen, n, length = [], 0, set(), 0, 0
                    for s in range(9):                      # the partition rule, by hand
                        bag = [int(r) for r in b.indices[slice(*b.bag_range(t, s))]]
                        if n + 1 > 4 or length + len(bag) > 12 or len(seen | set(bag)) > 6:
                            reads += sorted(seen)
                            seen, n, length = set(), 0, 0
                        seen |= set(bag)
                        n, length = n + 1, length + len(bag)
                    reads += sorted(seen)
                    updates = sorted(set(int(r) for r in b.table_slice(t)[0]))
                for r in reads:
                    dram += 1
                    cold += r not in sets[t]
                    served += r in sets[t]
                for r in updates:
                    dram += 2
                    cold += 2 * (r not in sets[t])
                    served += 2 * (r in sets[t])
                    if r in sets[t]:
                        updated.add((t, r))
        got = table_traffic(batches, hot, mode, limits)
        load = sum(map(len, sets))
        assert got == {"dram": dram, "dram_hot": cold + load + len(updated), "hits": served, "load": load,
                       "flush": len(updated)}, mode
        assert got["dram_hot"] < got["dram"]
