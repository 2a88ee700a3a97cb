"""The bounds of a job (golden/roofline.py, docs/design.md section 3) against hand-computed values."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refree.golden.batch import Batch
from refree.golden.counts import MODES, add_counts, count_part, zero_counts
from refree.golden.model import row_group_plans
from refree.golden.planner import PartLimits, partition, plan_part
from refree.golden.roofline import BEAT_KINDS, efficiency, input_beats, job_bounds, step_bounds


def one_table(bags, weights=None):
    idx = np.array([r for b in bags for r in b], np.int64)
    offs = np.cumsum([0] + [len(b) for b in bags]).astype(np.int64)
    return Batch(idx, offs, len(bags), None if weights is None else np.array(weights, np.float32))


# The worked example of docs/design.md section 2: 4 bags, 9 lookups, 5 distinct rows (0, 1, 2, 5, 6).
WORKED = [[5, 2, 0], [5, 2, 6], [5, 2], [1]]
WHOLE = PartLimits()
D = 64          # 4 beats a row


def beats(**kw):
    out = {k: kw.get(k, 0) for k in BEAT_KINDS}
    out["total"] = sum(out.values())
    return out


# Input: offsets 5 x 8 = 40 bytes (1 beat), indices 9 x 8 = 72 bytes (2 beats): 3 beats.
# Pooled: 4 bags x 4 beats.  Forward trie of refree: 2, 2-5, 2-5-0, 2-5-6, 1 (5 nodes);
# backward trie: gradient rows 0, 0-1, 0-1-2 (shared by rows 2 and 5), 1, 3 (5 nodes).
WORKED_BOUNDS = {
    ("baseline", "forward"): (beats(input_reads=3, table_reads=9 * 4, pooled_writes=16), {"fold": 9 * 4}),
    ("dedup", "forward"): (beats(input_reads=3, table_reads=5 * 4, pooled_writes=16), {"fold": 9 * 4}),
    ("refree", "forward"): (beats(input_reads=3, table_reads=5 * 4, pooled_writes=16), {"fold": 5 * 4}),
    ("baseline", "backward"): (beats(input_reads=3, grad_reads=9 * 4, table_reads=9 * 4, table_writes=9 * 4),
                               {"fold": 0, "updater": 9 * 4}),
    ("dedup", "backward"): (beats(input_reads=3, grad_reads=4 * 4, table_reads=5 * 4, table_writes=5 * 4),
                            {"fold": 9 * 4, "updater": 5 * 4}),
    ("refree", "backward"): (beats(input_reads=3, grad_reads=4 * 4, table_reads=5 * 4, table_writes=5 * 4),
                             {"fold": 5 * 4, "updater": 5 * 4}),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("job", ["forward", "backward"])
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_worked_example_every_mode_and_job(mode, job, ranks):
    b = job_bounds(one_table(WORKED), ["sum"], WHOLE, mode, job, D, ranks)
    want_beats, want_units = WORKED_BOUNDS[mode, job]
    assert b["beats"] == want_beats
    assert b["units"] == want_units
    assert b["memory"] == want_beats["total"] * 4 / ranks       # a beat: 4 clocks of one rank
    assert b["compute"] == max(want_units.values())
    assert b["analysis"] == 9
    assert b["roofline"] == max(b["memory"], b["compute"], b["analysis"])
    assert b["limit"] == "memory"           # memory at every R here (55 beats / 4 = 13.75 > 9)
    assert efficiency(2 * b["roofline"], b) == 2.0


def test_worked_example_figures_spelled_out():
    """The memory bounds at one rank, as numbers (55, 59, 39, 111 beats x 4 clocks)."""
    s = step_bounds(one_table(WORKED), ["sum"], WHOLE, D)
    assert {(m, j): s[m][j]["memory"] for m in MODES for j in ("forward", "backward")} == {
        ("baseline", "forward"): 220, ("baseline", "backward"): 444,
        ("dedup", "forward"): 156, ("dedup", "backward"): 236,
        ("refree", "forward"): 156, ("refree", "backward"): 236}


def test_rows_are_read_once_per_part_forward_and_once_backward():
    """Two parts of two bags: part 1 holds rows {0, 2, 5, 6}, part 2 rows {1, 2, 5}, so the
    sharing modes' forward reads 7 rows, not the batch's 5 (refree's tries: 4 + 3 nodes);
    backward by rows reads and updates each of the 5 once and each gradient row once
    (refree's trie in bag order, one row group: rows 5 and 2 share b0 b1 b2, row 0 b0,
    row 6 b1, row 1 b3: 5 nodes)."""
    s = step_bounds(one_table(WORKED), ["sum"], PartLimits(max_bags=2), D)
    for mode in ("dedup", "refree"):
        f, b = s[mode]["forward"], s[mode]["backward"]
        assert f["beats"]["table_reads"] == 7 * 4
        assert b["beats"]["table_reads"] == b["beats"]["table_writes"] == 5 * 4
        assert b["beats"]["grad_reads"] == 4 * 4
    assert s["refree"]["forward"]["units"] == {"fold": 7 * 4}
    assert s["refree"]["backward"]["units"] == {"fold": 5 * 4, "updater": 5 * 4}
    assert s["dedup"]["backward"]["units"] == {"fold": 9 * 4, "updater": 5 * 4}
    assert s["baseline"]["forward"]["beats"]["table_reads"] == 9 * 4        # per lookup, parts or not
    assert s["baseline"]["backward"]["beats"]["table_writes"] == 9 * 4


def test_row_groups_count_each_gradient_row_once():
    """Two row groups (a part of at most 3 distinct rows): the bound still reads each
    gradient row once and each row once; refree's backward nodes are the groups' (even
    rows 0, 2, 6: b0 b1 b2 for 2, b0 for 0, b1 for 6: 4 nodes; odd rows 5, 1: 4)."""
    s = step_bounds(one_table(WORKED), ["sum"], PartLimits(max_distinct_rows=3, max_bag_len=3), D)
    b = s["refree"]["backward"]
    assert b["beats"]["grad_reads"] == 4 * 4 and b["beats"]["table_writes"] == 5 * 4
    assert b["units"]["fold"] == (4 + 4) * 4


def test_weights_are_a_third_input_array():
    """9 weights of 4 bytes: one more beat in both jobs; nothing else changes here."""
    w = step_bounds(one_table(WORKED, [1.0] * 9), ["sum"], WHOLE, D)
    u = step_bounds(one_table(WORKED), ["sum"], WHOLE, D)
    for m in MODES:
        for j in ("forward", "backward"):
            assert w[m][j]["beats"]["input_reads"] == u[m][j]["beats"]["input_reads"] + 1
            assert w[m][j]["beats"]["total"] == u[m][j]["beats"]["total"] + 1


@pytest.mark.parametrize("n, want", [(0, 1), (1, 2), (8, 2), (9, 3), (16, 3), (17, 4)])
def test_each_input_array_starts_on_a_beat(n, want):
    """One bag of n lookups: offsets 2 x 8 bytes (one beat), indices ceil(8n / 64) beats."""
    assert input_beats(one_table([[0] * n])) == want


@pytest.mark.parametrize("n, want", [(0, 1), (1, 2), (16, 2), (17, 3), (32, 3), (33, 4)])
def test_int32_arrays_are_half_the_beats(n, want):
    """int32 offsets and indices: 16 a beat (the NMP reads them in their width)."""
    assert input_beats(one_table([[0] * n]).with_index_dtype(np.int32)) == want


def test_rowwise_adagrad_reads_and_writes_a_state_beat_per_row_and_runs_on_p_lanes():
    s = step_bounds(one_table(WORKED), ["sum"], WHOLE, D, optimizer="rowwise-adagrad")
    assert set(s) == {"dedup", "refree"}            # no Adagrad in baseline
    for mode, fold in (("dedup", 9 * 4), ("refree", 5 * 4)):
        b = s[mode]["backward"]
        assert b["beats"]["state_reads"] == b["beats"]["state_writes"] == 5
        assert b["units"] == {"fold": fold, "adagrad": 5 * 2 * D / 4}      # 2 D / P a row, P = 4
        assert b["compute"] == 160 and b["memory"] == (3 + 16 + 20 + 20 + 10) * 4
        assert s[mode]["forward"] == step_bounds(one_table(WORKED), ["sum"], WHOLE, D)[mode]["forward"]
    b8 = step_bounds(one_table(WORKED), ["sum"], WHOLE, D, optimizer="rowwise-adagrad", adagrad_lanes=8)
    assert b8["refree"]["backward"]["units"]["adagrad"] == 5 * 2 * D / 8
    b16 = step_bounds(one_table(WORKED), ["sum"], WHOLE, D, optimizer="rowwise-adagrad", adagrad_lanes=16)
    assert b16["refree"]["backward"]["units"]["adagrad"] == 5 * (D / 8 + D / 16)   # squares: 8 chains
    with pytest.raises(ValueError, match="baseline"):
        job_bounds(one_table(WORKED), ["sum"], WHOLE, "baseline", "backward", D, optimizer="rowwise-adagrad")


def test_mean_pooling_divides_every_nonempty_bag_on_the_dividers():
    s = step_bounds(one_table(WORKED + [[]]), ["mean"], WHOLE, D, div_lanes=4)
    for m in MODES:
        assert s[m]["forward"]["units"]["divider"] == 4 * D / 4     # 4 non-empty bags of 5
        assert "divider" not in s[m]["backward"]["units"]
    assert "divider" not in step_bounds(one_table(WORKED), ["sum"], WHOLE, D)["dedup"]["forward"]["units"]


def test_analysis_and_compute_can_be_the_roofline():
    """Four bags of the same row 8 times, D = 16 (one beat a row), R = 4 (a beat a clock):
    memory 1 + 4 input beats, 1 row, 4 pooled = 10 cycles; analysis 32 lookups; dedup folds
    32 operations (a tie with analysis goes to compute), refree's 4 bags share one key (row
    0, c = 8), one trie node."""
    s = step_bounds(one_table([[0] * 8] * 4), ["sum"], WHOLE, 16, ranks=4)
    assert s["refree"]["forward"]["memory"] == 10 and s["refree"]["forward"]["compute"] == 1
    assert s["refree"]["forward"]["limit"] == "analysis" and s["refree"]["forward"]["roofline"] == 32
    assert s["dedup"]["forward"]["compute"] == 32 and s["dedup"]["forward"]["limit"] == "compute"
    # a generic port of one beat a cycle is the same peak as four ranks
    assert step_bounds(one_table([[0] * 8] * 4), ["sum"], WHOLE, 16, beats_per_cycle=1.0) == s


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim"):
        step_bounds(one_table(WORKED), ["sum"], WHOLE, 24)
    with pytest.raises(ValueError, match="ranks"):
        step_bounds(one_table(WORKED), ["sum"], WHOLE, D, ranks=0)
    with pytest.raises(ValueError, match="job"):
        job_bounds(one_table(WORKED), ["sum"], WHOLE, "dedup", "update", D)


@st.composite
def batches(draw):
    T = draw(st.integers(1, 2))
    B = draw(st.integers(1, 6))
    bags = [draw(st.lists(st.integers(0, 7), max_size=6)) for _ in range(T * B)]
    idx = np.array([r for b in bags for r in b], np.int64)
    offs = np.cumsum([0] + [len(b) for b in bags]).astype(np.int64)
    limits = PartLimits(draw(st.integers(1, 4)), 64, draw(st.integers(6, 10)), 6)
    return Batch(idx, offs, B), limits


@settings(max_examples=100, deadline=None)
@given(batches())
def test_row_traffic_is_the_golden_counts_and_fold_work_the_trie_nodes(case):
    """Over random batches split into parts and row groups: the bound's row beats are the
    golden counts (the counts the engine's counters must equal) times D/16, but for the
    gradient rows of backward by rows, which the bound reads once a bag (the counts once
    per row group a bag touches); refree's fold operations are the tries' nodes, i.e. the
    counted additions plus the operations on the +0 accumulator."""
    batch, limits = case
    s = step_bounds(batch, ["sum"] * batch.num_tables, limits, 32)
    plans = [plan_part(batch, p, "sum") for p in partition(batch, limits)]
    groups = row_group_plans(batch, ["sum"] * batch.num_tables, limits)
    nonempty = int((np.diff(batch.offsets) > 0).sum())
    for mode in MODES:
        c = zero_counts()
        for plan in plans:
            c = add_counts(c, count_part(plan, mode))
        bwd = zero_counts()
        for plan in plans if mode == "baseline" else groups:
            bwd = add_counts(bwd, count_part(plan, mode))
        f, b = s[mode]["forward"], s[mode]["backward"]
        assert f["beats"]["table_reads"] == 2 * c["forward"]["reads"]
        assert b["beats"]["grad_reads"] == 2 * (bwd["backward"]["reads"] if mode == "baseline" else nonempty)
        assert b["beats"]["table_reads"] == b["beats"]["table_writes"] == 2 * bwd["update"]["rmw"]
        assert f["beats"]["pooled_writes"] == 2 * batch.batch_size * batch.num_tables
        assert f["analysis"] == b["analysis"] == len(batch.indices)
    depth1_f = sum(int((p.fwd_trie.node_depth == 1).sum()) for p in plans)
    depth1_b = sum(int((p.bwd_trie.node_depth == 1).sum()) for p in groups)
    c = zero_counts()
    for plan in plans:
        c = add_counts(c, count_part(plan, "refree"))
    bwd = zero_counts()
    for plan in groups:
        bwd = add_counts(bwd, count_part(plan, "refree"))
    assert s["refree"]["forward"]["units"]["fold"] == (c["forward"]["adds"] + depth1_f) * 2
    assert s["refree"]["backward"]["units"]["fold"] == (bwd["backward"]["adds"] + depth1_b) * 2
