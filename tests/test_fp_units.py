# amaranth: UnusedElaboratable=no
"""Binary32 units in Amaranth's simulator: special classes crossed, biased random operands,
backpressure on both streams, latency/throughput, reduced pipelines, reset, arguments."""

import numpy as np
import pytest
from amaranth.hdl import Value

from refree.hw.fp.adder import Adder
from refree.hw.fp.divider import Divider
from refree.hw.fp.fma import FusedMultiplyAdd
from refree.hw.fp.multiplier import Multiplier
from refree.hw.fp.sqrt import SquareRoot
from refree.verif.fp_cases import UNITS, vectors
from refree.verif.stream_sim import run_stream

# The FMA's full 18**3 special cross runs on Verilator (test_fp_cocotb.py); here every
# (a, b) special pair meets a representative set of addends.
FMA_C = [0x00000000, 0x80000000, 0x80000001, 0x3F800000, 0xFF800000, 0x7F800001]


def _check(vec, outputs):
    got = np.array(outputs, dtype=np.uint32)
    assert len(got) == len(vec)
    bad = np.nonzero(got != vec.expected)[0]
    assert bad.size == 0, "\n".join(f"{vec.describe(i)} got {int(got[i]):#010x}"
                                    for i in bad[:10]) + f"\n({bad.size} mismatches)"


@pytest.mark.parametrize("unit", list(UNITS))
def test_specials_crossed_and_random_with_backpressure(unit):
    vec = vectors(unit, 300, seed=101, special_c=FMA_C)
    run = run_stream(UNITS[unit].cls(), vec.words(), stall=0.25, seed=5)
    _check(vec, run.outputs)


@pytest.mark.parametrize("unit", list(UNITS))
def test_latency_and_one_op_per_cycle(unit):
    dut = UNITS[unit].cls()
    vec = vectors(unit, 64, seed=3, specials=False)
    run = run_stream(dut, vec.words())
    _check(vec, run.outputs)
    assert run.first_latency == dut.latency
    assert run.cycles == len(vec) + dut.latency      # no bubble: one operation per cycle


@pytest.mark.parametrize("make, unit, latency", [
    (lambda: Adder(pipeline=()), "add", 0),
    (lambda: Adder(pipeline=("add", "round")), "add", 2),
    (lambda: Multiplier(pipeline=("psum",)), "mul", 1),
    (lambda: FusedMultiplyAdd(pipeline=("pp", "norm", "round")), "fma", 3),
    (lambda: Divider(iterations_per_stage=13), "div", 2 + 2 + 6),
    (lambda: Divider(iterations_per_stage=4, pipeline=("div3", "round")), "div", 2),
    (lambda: SquareRoot(iterations_per_stage=9), "sqrt", 2 + 3 + 6),
    (lambda: Multiplier(pipeline=("prenorm", "pmid", "shift2")), "mul", 3),
    (lambda: FusedMultiplyAdd(pipeline=("add", "lzc", "shift1")), "fma", 3),
])
def test_other_pipelines(make, unit, latency):
    dut = make()
    assert dut.latency == latency
    vec = vectors(unit, 150, seed=17, specials=False)
    run = run_stream(dut, vec.words(), stall=0.2, seed=9)
    _check(vec, run.outputs)


@pytest.mark.parametrize("unit", ["add", "fma", "div"])
def test_reset_empties_the_pipeline(unit):
    dut = UNITS[unit].cls()
    vec = vectors(unit, 40, seed=23, specials=False)
    k = 3                                   # in flight when reset arrives: dropped
    run = run_stream(dut, vec.words(), reset_at=k, n_out=len(vec) - k)
    assert run.outputs == vec.expected[k:].tolist()


def test_payload_layouts():
    assert Value.cast(Adder().i.payload).shape().width == 65
    assert Value.cast(Multiplier().i.payload).shape().width == 64
    assert Value.cast(FusedMultiplyAdd().i.payload).shape().width == 96
    assert Value.cast(Divider().i.payload).shape().width == 64
    assert Value.cast(SquareRoot().i.payload).shape().width == 32
    for cls in (Adder, Multiplier, FusedMultiplyAdd, Divider, SquareRoot):
        assert Value.cast(cls().o.payload).shape().width == 32


def test_default_latencies():
    assert Adder().latency == 8
    assert Multiplier().latency == 11
    assert FusedMultiplyAdd().latency == 13
    assert Divider().latency == 34
    assert SquareRoot().latency == 34


def test_argument_checks():
    with pytest.raises(ValueError, match=r"Unknown pipeline stage 'bogus'; the stages of "
                                         r"Adder are \('unpack', 'align', 'add'"):
        Adder(pipeline=("add", "bogus"))
    with pytest.raises(TypeError, match="Pipeline must be an iterable of stage names, not "
                                        "'add'"):
        FusedMultiplyAdd(pipeline="add")
    with pytest.raises(ValueError, match="Iterations per stage must be an integer from 1 to "
                                         "26, not 0"):
        Divider(iterations_per_stage=0)
    with pytest.raises(ValueError, match="Iterations per stage must be an integer from 1 to "
                                         "26, not 2.5"):
        SquareRoot(iterations_per_stage=2.5)
    with pytest.raises(ValueError, match=r"DSP kind must be one of \('generic', 'ecp5'\), "
                                         r"not 'xilinx'"):
        Multiplier(dsp="xilinx")
