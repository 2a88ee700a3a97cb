"""`refree generate`: Verilog and manifest of a configured engine; bad configurations."""
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
"""


def test_generate_writes_verilog_and_a_manifest_that_agree(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(SMALL)
    assert main(["generate", "--config", str(tmp_path / "c.toml"), "-o", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "refree_engine.json").read_text())
    verilog = (tmp_path / "out" / "refree_engine.v").read_text()
    assert manifest["parameters"]["parts"]["max_bags"] == 8 and manifest["parameters"]["engine"]["dim"] == 16
    top = verilog[verilog.index("module refree_engine"):]
    top = top[:top.index("endmodule")]
    for port in manifest["ports"]:
        width = port["width"]
        decl = rf"{'input' if port['direction'] == 'in' else 'output'} " + \
            (rf"\[{width - 1}:0\] " if width > 1 else "") + rf"\\?{port['name']} ?;"
        assert re.search(decl, top), port
    assert manifest["layouts"]["config"]["tables[1].stride"]["width"] == 16


def test_defaults_are_documented_and_loaded():
    conf = load_config()
    assert conf.dim == 64 and conf.params.max_bags == 256


@pytest.mark.parametrize("text,what", [
    ("[parts]\nmax_bagz = 3\n", "unknown parameter parts.max_bagz"),
    ("[engin]\ndim = 16\n", "unknown section [engin]"),
    ("[engine]\ndim = 24\n", "engine.dim must be a positive multiple of 16"),
    ("[parts]\nmax_bags = 0\n", "EngineParams.max_bags must be an integer"),
])
def test_bad_configurations_name_the_parameter(tmp_path, capsys, text, what):
    (tmp_path / "c.toml").write_text(text)
    assert main(["generate", "--config", str(tmp_path / "c.toml"), "-o", str(tmp_path / "out")]) == 2
    assert what in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
