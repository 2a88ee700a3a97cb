"""`refree generate`: Verilog and manifest of the configured buffer chip, its register map;
bad configurations."""
import json
import re

import pytest

from refree.gen.cli import main
from refree.gen.config import load_config

SMALL = """
[engine]
dim = 16
max_tables = 2
addr_bits = 20
[parts]
index_width = 16
max_bags = 8
max_lookups = 32
max_distinct_rows = 16
max_bag_len = 8
radix_bits = 4
[window]
bg = 1
ba = 2
row = 100
rows = 2
"""


@pytest.fixture(scope="module")
def chip(tmp_path_factory):
    """`refree generate --top lrdimm` of the SMALL configuration (its window moved), once for
    the module (a conversion of the whole chip takes about a minute): (output folder, config
    path)."""
    d = tmp_path_factory.mktemp("generate")
    (d / "c.toml").write_text(SMALL)
    assert main(["generate", "--config", str(d / "c.toml"), "-o", str(d / "out"), "--top", "lrdimm"]) == 0
    return d / "out", d / "c.toml"


def test_generate_writes_verilog_and_a_manifest_that_agree(chip):
    out, _ = chip
    manifest = json.loads((out / "refree_lrdimm.json").read_text())
    verilog = (out / "refree_lrdimm.v").read_text()
    assert manifest["parameters"]["parts"]["max_bags"] == 8 and manifest["parameters"]["engine"]["dim"] == 16
    top = verilog[verilog.index("module refree_lrdimm"):]
    top = top[:top.index("endmodule")]
    for port in manifest["ports"]:
        width = port["width"]
        decl = rf"{'input' if port['direction'] == 'in' else 'output'} " + \
            (rf"\[{width - 1}:0\] " if width > 1 else "") + rf"\\?{port['name']} ?;"
        assert re.search(decl, top), port
    assert manifest["layouts"]["config"]["tables[1].stride"]["width"] == 16


def test_defaults_are_documented_and_loaded():
    from refree.hw.lrdimm.lrdimm_nmp import default_window
    conf = load_config()
    assert conf.dim == 64 and conf.params.max_bags == 256
    assert conf.window_params() == default_window(conf.dram)       # the chip's own default


@pytest.mark.parametrize("text,what", [
    ("[parts]\nmax_bagz = 3\n", "unknown parameter parts.max_bagz"),
    ("[engin]\ndim = 16\n", "unknown section [engin]"),
    ("[engine]\ndim = 24\n", "engine.dim must be a positive multiple of 16"),
    ("[engine]\nfold_lanes = 24\n", "engine.fold_lanes must be one of 16, 32, 64, not 24"),
    ("[parts]\nmax_bags = 0\n", "EngineParams.max_bags must be an integer"),
    ("[dram]\nranks = 3\n", "dram: AddressMapping.ranks must be a power of two in [1, 8], not 3"),
    ("[dram]\ngrade = \"DDR4-1600\"\n", "speed grade must be one of DDR4-2400"),
    ("[dram]\nwindow = 0\n", "dram: DramParams.window must be an integer in [1, 32], not 0"),
    ("[dram]\nwrite_high = 30\n", "dram: DramParams.write_high must be an integer in [1, 24] (window 24), not 30"),
    ("[dram]\nwrite_low = 16\n", "dram: DramParams.write_low must be an integer in [0, 15] (window 24), not 16"),
    ("[window]\nrank = 1\n", "window: WindowParams.rank must be below 1 (the ranks' geometry), not 1"),
    ("[window]\nrow = 65535\nrows = 2\n", "window: WindowParams.row + rows must be at most 65536 "
                                          "(the rows of a bank), not 65537"),
    ("[window]\nrows = \"2\"\n", "window: WindowParams.rows must be an integer in [1, 1024], not '2'"),
    ("[window]\nrows = 0\n", "window: WindowParams.rows must be an integer in [1, 1024], not 0"),
])
def test_bad_configurations_name_the_parameter(tmp_path, capsys, text, what):
    (tmp_path / "c.toml").write_text(text)
    assert main(["generate", "--config", str(tmp_path / "c.toml"), "-o", str(tmp_path / "out")]) == 2
    assert what in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_register_map_documents_every_field_and_the_c_header_compiles(chip, tmp_path):
    """The Markdown and the C header come from one register map: every configuration field
    and counter of the engine has its words, no two registers share a word, groups start on
    burst boundaries, and the header compiles with its offsets equal to the map's."""
    import shutil
    import subprocess
    from refree.hw.engine.engine import Engine
    from refree.hw.lrdimm.regmap import RegisterMap
    out, config = chip
    conf = load_config(config)
    engine = Engine(**{**conf.engine_kwargs(), "addr_bits": conf.dram.mapping.addr_bits})  # the chip's
    regs = RegisterMap(engine.Config, engine.Counters, conf.window_params())
    manifest = json.loads((out / "refree_lrdimm.json").read_text())
    # the chip's top: the host's pins and every rank's
    names = {p["name"] for p in manifest["ports"]}
    assert {"host__cs_n", "host__wrdata", "host__rddata", "rank0__cs_n", "rank0__rddata"} <= names
    fields = {r.field: r for r in regs.registers if r.group == "config"}
    assert set(fields) == set(manifest["layouts"]["config"])
    assert {r.field for r in regs.registers if r.group == "counters"} == set(manifest["layouts"]["counters"])
    for path, f in manifest["layouts"]["config"].items():
        assert fields[path].width == f["width"]
    used = [w for r in regs.registers for w in range(r.word, r.word + r.words)]
    assert len(used) == len(set(used))
    for group in ("control", "config", "counters"):
        assert min(r.word for r in regs.registers if r.group == group) % 16 == 0
    md = (out / "refree_regmap.md").read_text()
    assert "Window: rank 0, bank group 1, bank 2, rows 100 to 101." in md       # the configured one
    assert all(f"`{r.name}`" in md for r in regs.registers)
    header = out / "refree_regmap.h"
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    probe = tmp_path / "probe.c"
    probe.write_text(f'#include "{header}"\n#include <stdio.h>\nint main(void) {{\n' +
                     "".join(f'printf("%u %u\\n", REFREE_{r.name}_WORD, REFREE_{r.name}_BITS);\n'
                             for r in regs.registers)
                     + 'printf("%u\\n", REFREE_STAGING_STRIPE);\n' + "return 0; }\n")
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(tmp_path / "probe"), str(probe)], check=True)
    out = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:-1] == [f"{r.word} {r.width}" for r in regs.registers] \
        + [str(manifest["staging_stripe"])]


def test_the_chip_lints_clean_through_its_fusesoc_core(chip, tmp_path):
    """`refree generate` writes a FuseSoC core beside the Verilog; FuseSoC runs its `lint`
    target, Verilator's lint of the generated chip (the SMALL configuration: 16 fold lanes
    at D = 16, so the datapath's one-beat scratch row and rows of one beat are in it), with
    the two idioms of Amaranth's Verilog waived (`gen.generate.LINT_WAIVERS`): WIDTH
    (carries and zero-extensions written as assignments of unequal widths) and
    CASEINCOMPLETE (a `casez` over an FSM state without a default arm).  Any other warning
    fails the target (Verilator's warnings are fatal).  The default configuration by hand:
    docs/verification.md."""
    import subprocess
    import sys
    from pathlib import Path
    from refree.gen.generate import LINT_WAIVERS
    from refree.verif.toolchain import require_simulator, setup_verilator
    require_simulator("verilator")
    setup_verilator()
    out, _ = chip
    core = (out / "refree_lrdimm.core").read_text()
    assert "name: refree:nmp:refree_lrdimm:" in core and all(w in core for w in LINT_WAIVERS)
    fusesoc = Path(sys.executable).with_name("fusesoc")
    run = subprocess.run([str(fusesoc), "--cores-root", str(out), "run", "--target", "lint",
                          "refree:nmp:refree_lrdimm"], cwd=tmp_path, capture_output=True, text=True)
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "%Warning" not in log, log[-3000:]
    assert "lint-verilator" in log             # (the target did run Verilator)
