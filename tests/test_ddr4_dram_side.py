"""R ranks behind the engine's memory port (hw/ddr4/dram_side.py) in Amaranth's simulator:
responses in port order whatever rank they come from, every rank's commands legal, beats
where the address mapping puts them, and the ranks transferring in parallel."""
import numpy as np
import pytest

from refree.hw.ddr4.mapping import AddressMapping
from refree.verif.dram_side_harness import GEOMETRY, run


def table_rows(rng, n, span):
    """Reads of ``n`` random four-beat rows, a third of them written back after."""
    reqs = []
    for _ in range(n):
        start = int(rng.integers(0, span // 4)) * 4
        reqs += [(start + j, False, 0) for j in range(4)]
        if rng.random() < 1 / 3:
            reqs += [(start + j, True, int(rng.integers(0, 1 << 62))) for j in range(4)]
    return reqs


@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_responses_in_order_across_ranks(ranks):
    rng = np.random.default_rng(ranks)
    mapping = AddressMapping(ranks=ranks, geometry=GEOMETRY)
    reqs = table_rows(rng, 60, 1 << 14)
    initial = {b: int(rng.integers(0, 1 << 62)) << 200 | b for b, _, _ in reqs}
    got, devs, cycles = run(mapping, reqs, initial, ready_p=0.6)
    mem, want = dict(initial), []
    for beat, write, data in reqs:
        if write:
            mem[beat] = data
        else:
            want.append(mem[beat])
    assert got == want
    for dev in devs:
        assert dev.model.violations == [] and dev.errors == [] and dev.pending == 0
    # every beat is where the mapping says: read it back through the backdoor
    for beat, data in mem.items():
        rank, bg, ba, row, col = mapping.locate(beat)
        assert devs[rank].peek_beat(bg, ba, row, col) == data
    if ranks > 1:
        assert all(dev.model.counters.reads > 0 for dev in devs)


def test_ranks_transfer_in_parallel():
    """The same 192 table-row reads with 1 and 4 ranks: four ranks take well under half the
    clocks of one (each rank has its own data bus)."""
    cycles = {}
    for ranks in (1, 4):
        rng = np.random.default_rng(7)
        reqs = [r for r in table_rows(rng, 192, 1 << 16) if not r[1]]
        _, devs, cycles[ranks] = run(AddressMapping(ranks=ranks, geometry=GEOMETRY), reqs, {})
        assert all(dev.model.violations == [] for dev in devs)
    print(f"768 reads of random 4-beat rows, DDR4-2400: 1 rank {cycles[1]} clocks, 4 ranks {cycles[4]}")
    assert cycles[4] < 0.45 * cycles[1]


def test_a_slow_rank_does_not_hold_up_the_others():
    """24 reads of rows of one bank of rank 0 (a PRE and an ACT each, ~tRC apart), then 4
    reads of rank 1: the port takes all 28 at once, since each rank's requests queue in
    front of its window (RANK_QUEUE); without the queue the 17th would wait for rank 0's
    window to empty by one, several tRC."""
    mapping = AddressMapping(ranks=2, geometry=GEOMETRY)
    slow, other, rows = [], [], set()
    for beat in range(0, 1 << 22, 4):
        rank, bg, ba, row, col = mapping.locate(beat)
        if rank == 0 and (bg, ba) == (0, 0) and row not in rows and len(slow) < 24:
            rows.add(row)
            slow.append(beat)
        elif rank == 1 and len(other) < 4:
            other.append(beat)
        if len(slow) == 24 and len(other) == 4:
            break
    reqs = [(b, False, 0) for b in slow + other]
    got, devs, cycles, accepted = run(mapping, reqs, {}, with_accepted=True)
    assert len(got) == len(reqs) and all(dev.model.violations == [] for dev in devs)
    assert accepted[-1] - accepted[0] < 40, accepted
