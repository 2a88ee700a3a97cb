# amaranth: UnusedElaboratable=no
"""The P-lane vector unit against its numpy model (refree.verif.vector_ref), bit for bit:
element-wise operations on biased binary32 operands and row-wise Adagrad rows, in
Amaranth's simulator and as Verilog under cocotb (Verilator and Icarus)."""

import numpy as np
import pytest

from refree.hw.fp.fma import FusedMultiplyAdd
from refree.hw.fp.vector import VectorOp, VectorUnit
from refree.verif import vector_ref as V
from refree.verif.stream_harness import StreamBench
from refree.verif.stream_sim import run_stream
from refree.verif.toolchain import require_simulator


def _expected(beats, lanes, length):
    return [V.pack_out(r, lanes) for r in V.run(beats, lanes, length)]


def _compare(got, exp, beats):
    assert len(got) == len(exp)
    bad = [i for i, (a, b) in enumerate(zip(got, exp)) if a != b]
    assert not bad, f"{len(bad)} beats differ, first at {bad[0]}: got {got[bad[0]]:#x} " \
                    f"expected {exp[bad[0]]:#x}"


@pytest.mark.parametrize("lanes, length, stall", [
    (4, 10, 0.2),       # D not a multiple of P: padding lanes in the last beat
    (1, 1, 0.3),        # one element, one lane
    (3, 17, 0.1),       # odd everything
    (2, 16, 0.0),
])
def test_vector_unit_matches_model(lanes, length, stall):
    beats = V.random_beats(lanes * 1000 + length, lanes, length, n_elementwise=80, n_rows=4)
    exp = _expected(beats, lanes, length)
    run = run_stream(VectorUnit(lanes=lanes, length=length),
                     [V.pack_in(b, lanes) for b in beats], stall=stall, seed=3,
                     n_out=len(exp))
    _compare(run.outputs, exp, beats)


def test_one_beat_per_cycle():
    lanes = 4
    dut = VectorUnit(lanes=lanes, length=8)
    x, y, _ = V.R.operands("fma", 64 * lanes, 5)
    beats = [{"op": V.ADD, "last": 0, "scalar": 0, "eps": 0, "state": 0,
              "x": x[k * lanes:(k + 1) * lanes], "y": y[k * lanes:(k + 1) * lanes]}
             for k in range(64)]
    exp = _expected(beats, lanes, 8)
    run = run_stream(dut, [V.pack_in(b, lanes) for b in beats])
    _compare(run.outputs, exp, beats)
    # pipeline fill (FMA latency, FIFO write and read) plus one beat per cycle
    assert run.cycles <= 64 + 1 + FusedMultiplyAdd().latency + 4   # + operand register


def test_adagrad_zero_gradient_row():
    # g = 0: state stays, m = lr / (sqrt(state) + eps), E unchanged (E + -m*0; -0 + -0 = -0)
    lanes, length = 4, 8
    E = np.array([0x3F800000, 0x80000000, 0x00000001, 0xC2000000] * 2, dtype=np.uint32)
    beats = [{"op": V.ADAGRAD, "last": int(j == 1), "scalar": V.f32_bits(0.1),
              "eps": V.f32_bits(1e-8), "state": V.f32_bits(4.0),
              "x": np.zeros(lanes, np.uint32), "y": E[j * lanes:(j + 1) * lanes]}
             for j in range(2)]
    exp = _expected(beats, lanes, length)
    run = run_stream(VectorUnit(lanes=lanes, length=length),
                     [V.pack_in(b, lanes) for b in beats], n_out=2)
    _compare(run.outputs, exp, beats)
    r = np.array([(run.outputs[j] >> (32 * k)) & 0xFFFFFFFF for j in range(2)
                  for k in range(lanes)], dtype=np.uint32)
    assert r.tolist() == E.tolist()
    assert (run.outputs[0] >> 128) & 0xFFFFFFFF == V.f32_bits(4.0)


def test_ops_enum_matches_model():
    assert [VectorOp.COPY.value, VectorOp.ADD.value, VectorOp.MUL.value, VectorOp.FMA.value,
            VectorOp.DIV.value, VectorOp.SGD.value, VectorOp.ADAGRAD.value] == \
           [V.COPY, V.ADD, V.MUL, V.FMA, V.DIV, V.SGD, V.ADAGRAD]


def test_argument_checks():
    with pytest.raises(ValueError, match="Lane count must be a positive integer, not 0"):
        VectorUnit(lanes=0)
    with pytest.raises(ValueError, match=r"Row length must be an integer from 1 to "
                                         r"2\*\*24 - 1, not 0"):
        VectorUnit(length=0)
    with pytest.raises(ValueError, match="FIFO depth must be an integer of at least 3"):
        VectorUnit(fifo_depth=2)


_BENCH = {}


def _bench(lanes, length):
    key = (lanes, length)
    if key not in _BENCH:
        _BENCH[key] = StreamBench(VectorUnit, name=f"fp_vector_p{lanes}_d{length}",
                                  depth={"verilator": 1 << 18, "icarus": 1 << 12},
                                  lanes=lanes, length=length)
    return _BENCH[key]


def _cocotb(sim, n_elementwise, n_rows, stall, seed):
    lanes, length = 2, 37
    beats = V.random_beats(seed, lanes, length, n_elementwise=n_elementwise, n_rows=n_rows)
    exp = _expected(beats, lanes, length)
    # an Adagrad row takes a few hundred cycles; element-wise beats about one each
    budget = (n_rows * 1_000 + 2 * n_elementwise) * (3 if stall else 1) + 10_000
    _bench(lanes, length).run(sim, [V.pack_in(b, lanes) for b in beats], exp, stall=stall,
                              seed=seed, tag=f"vec-{n_rows}", max_cycles=budget)


def test_vector_verilator():
    require_simulator("verilator")
    _cocotb("verilator", 20_000, 300, stall=40, seed=11)


def test_vector_icarus():
    require_simulator("icarus")
    _cocotb("icarus", 600, 8, stall=80, seed=12)


@pytest.mark.slow
def test_vector_verilator_long():
    require_simulator("verilator")
    _cocotb("verilator", 50_000, 3_000, stall=20, seed=13)
