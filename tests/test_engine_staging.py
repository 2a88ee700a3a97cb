"""The staging rows' layout (hw/engine/staging.py), the contract between the host and the
engine for the pooled output and the upstream gradient: a bijection onto its extent, the
row-major layout at stripe 1, a row's beats on successive ranks at the chip's stripe, and
the same stripe on both sides of the chip.  (The engine's use of it is checked bit for bit
in tests/test_engine_wide.py, whose 32-lane engine runs striped.)"""
import pytest

from refree.hw.ddr4.mapping import AddressMapping
from refree.hw.ddr4.params import DramParams
from refree.hw.engine.params import EngineParams
from refree.hw.engine.staging import staging_beat, staging_beats
from refree.hw.lrdimm.nmp_core import NmpCore
from refree.verif.engine_run import EngineRunner
from refree.verif.staging import layout

from test_engine_step import make_batch


@pytest.mark.parametrize("stripe", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("row_beats", [1, 2, 3, 4])
@pytest.mark.parametrize("rows", [1, 5, 16, 37])
def test_every_beat_has_its_own_address_inside_the_extent(stripe, row_beats, rows):
    base = 1024
    addrs = [staging_beat(base, r, j, row_beats, stripe) for r in range(rows) for j in range(row_beats)]
    extent = staging_beats(rows, row_beats, stripe)
    assert len(set(addrs)) == len(addrs)
    assert min(addrs) >= base and max(addrs) < base + extent
    assert extent == -(-rows // stripe) * stripe * row_beats      # whole groups of rows, no more
    for r in range(rows):
        for j in range(row_beats):      # beat j lies j stripes after beat 0 (the row fetcher's stride)
            assert staging_beat(base, r, j, row_beats, stripe) == staging_beat(base, r, 0, row_beats, stripe) + j * stripe


def test_stripe_one_is_row_major():
    assert [staging_beat(64, r, j, 4) for r in range(3) for j in range(4)] == list(range(64, 76))


@pytest.mark.parametrize("ranks,per_rank", [(1, 4), (2, 2), (4, 1), (8, 1)])
def test_a_row_of_four_beats_lies_on_successive_ranks(ranks, per_rank):
    """D = 64 under the chip's stripe: a row's beats on min(R, 4) ranks, as many on each; and
    a run of consecutive rows gives every rank the same number of beats."""
    m = AddressMapping(ranks=ranks, chunk_beats=4)
    for r in range(40):
        where = [m.locate(staging_beat(0, r, j, 4, m.staging_stripe))[0] for j in range(4)]
        assert sorted(where.count(k) for k in set(where)) == [per_rank] * (4 // per_rank)
    load = [0] * ranks
    for r in range(64):
        for j in range(4):
            load[m.locate(staging_beat(0, r, j, 4, m.staging_stripe))[0]] += 1
    assert load == [256 // ranks] * ranks


@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_the_chip_and_its_host_use_the_same_stripe(ranks):
    dram = DramParams(ranks=ranks, rows=1 << 10)
    params = EngineParams(index_width=16, max_bags=8, max_lookups=80, max_distinct_rows=32, max_bag_len=32)
    core = NmpCore(dict(params=params, dim=64, max_tables=2), dram)
    runner = EngineRunner(params, 64, 2, None, dram=dram)
    assert core.engine.staging_stripe == runner.staging_stripe == dram.mapping.staging_stripe
    assert dram.mapping.staging_stripe == (1 if ranks == 1 else dram.chunk_beats)
    with pytest.raises(ValueError, match="staging stripe"):
        EngineRunner(params, 64, 2, None, dram=dram, staging_stripe=2 * dram.chunk_beats)


def test_the_host_layout_leaves_room_for_whole_groups():
    """Three bags of one table at stripe 4: the pooled output and the gradient each span a
    whole group of four rows, and nothing else starts inside them."""
    import numpy as np
    batch = make_batch([[0], [1], [2]])
    lay = layout(batch, [np.zeros((4, 64), np.float32)], stripe=4)
    assert lay.pooled_beats == 16 and lay.grad >= lay.pooled + 16 and lay.tables[0][0] >= lay.grad + 16
    with pytest.raises(ValueError, match="power of two"):
        staging_beats(3, 4, 3)
