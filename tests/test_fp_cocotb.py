# amaranth: UnusedElaboratable=no
"""Binary32 units as generated Verilog, under cocotb on Verilator and Icarus.

Each unit runs in the file-driven stream harness (refree.verif.stream_harness): the
operands are loaded into the simulator and streamed at full speed, every result bit is
compared. Verilator: all special classes crossed (18**3 triples for the FMA) plus 100,000
biased random operations at full rate, and a backpressure run; Icarus: the special cross
plus a few thousand random operations with backpressure. The million-operation runs are
marked slow (``make test-slow``).
"""

import pytest

from refree.verif.ecp5_models import write_models
from refree.verif.fp_cases import UNITS, vectors
from refree.verif.stream_harness import CocotbFailure, StreamBench
from refree.verif.toolchain import build_root, require_simulator

_BENCHES = {}


def bench(unit: str) -> StreamBench:
    if unit not in _BENCHES:
        u = UNITS[unit]
        _BENCHES[unit] = StreamBench(u.cls, name=u.name)
    return _BENCHES[unit]


def _run(unit, sim, vec, stall, seed=1, tag="run"):
    return bench(unit).run(sim, vec.words(), vec.expected.tolist(), stall=stall, seed=seed,
                           tag=tag, describe=vec.describe)


@pytest.mark.parametrize("unit", list(UNITS))
def test_verilator_100k_full_rate(unit):
    require_simulator("verilator")
    vec = vectors(unit, 100_000, seed=2024)
    stats = _run(unit, "verilator", vec, stall=0, tag="100k")
    latency = bench(unit).component.latency
    # one operation per cycle: the last result leaves `latency` cycles after the last input
    assert stats["cycles"] <= len(vec) + latency + 4


@pytest.mark.parametrize("unit", list(UNITS))
def test_verilator_backpressure(unit):
    require_simulator("verilator")
    vec = vectors(unit, 20_000, seed=77)
    _run(unit, "verilator", vec, stall=100, seed=3, tag="stall")


@pytest.mark.parametrize("unit", list(UNITS))
def test_icarus_sample(unit):
    require_simulator("icarus")
    vec = vectors(unit, 3_000, seed=4242)
    _run(unit, "icarus", vec, stall=64, seed=5, tag="icarus")


@pytest.mark.slow
@pytest.mark.parametrize("unit", list(UNITS))
def test_verilator_million(unit):
    require_simulator("verilator")
    vec = vectors(unit, 1_000_000, seed=1_000_003)
    _run(unit, "verilator", vec, stall=16, seed=11, tag="1m")


def test_a_wrong_bit_fails():
    require_simulator("verilator")
    vec = vectors("mul", 1_000, seed=9, specials=False)
    vec.expected[617] ^= 1
    with pytest.raises(CocotbFailure, match=r"1 of 1000 results differ\n617: expected"):
        _run("mul", "verilator", vec, stall=0, tag="wrong")


@pytest.mark.parametrize("unit", ["mul", "fma"])
def test_ecp5_dsp_netlist_on_icarus(unit):
    """The ECP5 build (explicit MULT18X18D blocks with internal registers, as `refree
    synth` uses) computes the same results; the DSP block is a behavioural model."""
    require_simulator("icarus")
    folder = build_root() / "fp"
    folder.mkdir(parents=True, exist_ok=True)
    u = UNITS[unit]
    b = StreamBench(u.cls, name=f"{u.name}_ecp5", extra_sources=[write_models(folder)],
                    dsp="ecp5")
    assert b.design.verilog.read_text().count("MULT18X18D") == 4
    assert b.component.latency == u.cls().latency
    vec = vectors(unit, 3_000, seed=99)
    b.run("icarus", vec.words(), vec.expected.tolist(), stall=64, seed=2, tag="ecp5",
          describe=vec.describe)
