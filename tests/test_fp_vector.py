# amaranth: UnusedElaboratable=no
"""The P-lane vector unit against its numpy model (refree.verif.vector_ref), bit for bit:
element-wise operations on biased binary32 operands, in Amaranth's simulator and as
Verilog under cocotb (Verilator and Icarus)."""

import pytest

from refree.hw.fp.fma import FusedMultiplyAdd
from refree.hw.fp.vector import VectorOp, VectorUnit
from refree.verif import vector_ref as V
from refree.verif.stream_harness import StreamBench
from refree.verif.stream_sim import run_stream
from refree.verif.toolchain import require_simulator


def _expected(beats, lanes):
    return [V.pack_out(r, lanes) for r in V.run(beats)]


def _compare(got, exp, beats):
    assert len(got) == len(exp)
    bad = [i for i, (a, b) in enumerate(zip(got, exp)) if a != b]
    assert not bad, f"{len(bad)} beats differ, first at {bad[0]}: got {got[bad[0]]:#x} " \
                    f"expected {exp[bad[0]]:#x}"


@pytest.mark.parametrize("lanes, stall", [(4, 0.2), (1, 0.3), (3, 0.1), (2, 0.0)])
def test_vector_unit_matches_model(lanes, stall):
    beats = V.random_beats(lanes * 1000, lanes, n_elementwise=120)
    exp = _expected(beats, lanes)
    run = run_stream(VectorUnit(lanes=lanes), [V.pack_in(b, lanes) for b in beats], stall=stall,
                     seed=3, n_out=len(exp))
    _compare(run.outputs, exp, beats)


def test_one_beat_per_cycle():
    lanes = 4
    dut = VectorUnit(lanes=lanes)
    x, y, _ = V.R.operands("fma", 64 * lanes, 5)
    beats = [{"op": V.ADD, "last": 0, "scalar": 0,
              "x": x[k * lanes:(k + 1) * lanes], "y": y[k * lanes:(k + 1) * lanes]}
             for k in range(64)]
    exp = _expected(beats, lanes)
    run = run_stream(dut, [V.pack_in(b, lanes) for b in beats])
    _compare(run.outputs, exp, beats)
    # pipeline fill (FMA latency, FIFO write and read) plus one beat per cycle
    assert run.cycles <= 64 + 1 + FusedMultiplyAdd().latency + 4   # + operand register


def test_ops_enum_matches_model():
    assert [VectorOp.COPY.value, VectorOp.ADD.value, VectorOp.MUL.value, VectorOp.FMA.value,
            VectorOp.DIV.value, VectorOp.SGD.value] == [V.COPY, V.ADD, V.MUL, V.FMA, V.DIV, V.SGD]


def test_argument_checks():
    with pytest.raises(ValueError, match="Lane count must be a positive integer, not 0"):
        VectorUnit(lanes=0)
    with pytest.raises(ValueError, match="FIFO depth must be an integer of at least 3"):
        VectorUnit(fifo_depth=2)


_BENCH = {}


def _bench(lanes):
    if lanes not in _BENCH:
        _BENCH[lanes] = StreamBench(VectorUnit, name=f"fp_vector_p{lanes}",
                                    depth={"verilator": 1 << 18, "icarus": 1 << 12}, lanes=lanes)
    return _BENCH[lanes]


def _cocotb(sim, n_elementwise, stall, seed):
    lanes = 2
    beats = V.random_beats(seed, lanes, n_elementwise=n_elementwise)
    exp = _expected(beats, lanes)
    _bench(lanes).run(sim, [V.pack_in(b, lanes) for b in beats], exp, stall=stall, seed=seed,
                      tag="vec", max_cycles=2 * n_elementwise * (3 if stall else 1) + 10_000)


def test_vector_verilator():
    require_simulator("verilator")
    _cocotb("verilator", 20_000, stall=40, seed=11)


def test_vector_icarus():
    require_simulator("icarus")
    _cocotb("icarus", 600, stall=80, seed=12)


@pytest.mark.slow
def test_vector_verilator_long():
    require_simulator("verilator")
    _cocotb("verilator", 200_000, stall=20, seed=13)
