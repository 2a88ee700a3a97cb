"""Build keys: a design's Verilog is rebuilt when, and only when, code it is generated
from changes (the closure of its module's imports).  Fast: no Verilog is generated."""
from pathlib import Path

from refree.hw.engine.engine import Engine
from refree.hw.fp.adder import Adder
from refree.hw.lrdimm.lrdimm_nmp import LrdimmNmp
from refree.verif import toolchain


def test_the_closure_follows_imports_and_nothing_else():
    adder = toolchain._module_closure(Adder.__module__)
    assert {"refree.hw.fp.adder", "refree.hw.fp.common", "refree.hw.fp", "refree.hw"} == set(adder)
    chip = toolchain._module_closure(LrdimmNmp.__module__)
    for mod in ("refree.hw.ddr4.rank_controller", "refree.hw.engine.analyzer", "refree.hw.engine.lookup_buffer",
                "refree.hw.fp.fma", "refree.golden.errors", "refree.hw.engine"):     # (a package's __init__)
        assert mod in chip, mod
    engine = toolchain._module_closure(Engine.__module__)
    assert not any(m.startswith("refree.hw.ddr4") or m.startswith("refree.verif") for m in engine)


def test_the_digest_changes_with_a_file_of_the_closure_only(monkeypatch):
    before = {cls: toolchain._source_digest(cls) for cls in (Adder, Engine)}
    analyzer = Path(toolchain._module_closure(Engine.__module__)["refree.hw.engine.analyzer"])
    read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read(self) + (b"#" if self == analyzer else b""))
    assert toolchain._source_digest(Engine) != before[Engine]
    assert toolchain._source_digest(Adder) == before[Adder]
