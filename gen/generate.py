"""`refree generate`: the Verilog of the configured design, a JSON manifest of it, and the
register map of its NMP window as Markdown and a C header (from hw/lrdimm/regmap.py, the
source the hardware's register block takes too).

Three tops: ``engine`` (the bare engine with its generic memory port), ``core`` (the
engine on the DDR4 ranks of ``[dram]``: rank command engines and their pins, started
through ports) and ``lrdimm`` (the whole buffer chip: the DDR4 host interface with the NMP
window, the core, the ranks' pins)."""
import json
import os

from amaranth.back import verilog
from amaranth.hdl import Value
from amaranth.lib import wiring

from refree.hw.engine.engine import Engine
from refree.hw.lrdimm.lrdimm_nmp import LrdimmNmp
from refree.hw.lrdimm.nmp_core import NmpCore
from refree.hw.lrdimm.regmap import RegisterMap

from .config import load_config

__all__ = ["generate"]


def ports_of(component):
    """[{name, direction, width}] of the component's ports, as Amaranth names them."""
    out = []
    for path, member, value in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        out.append({"name": name, "direction": "in" if member.flow == wiring.In else "out",
                    "width": len(Value.cast(value))})
    return out


TOPS = ("engine", "core", "lrdimm")


def generate(config_path, out_dir, top="engine"):
    conf = load_config(config_path)
    name = f"refree_{top}"
    if top == "engine":
        design = engine = Engine(**conf.engine_kwargs())
    elif top in ("core", "lrdimm"):
        kwargs = conf.engine_kwargs()
        del kwargs["addr_bits"]             # the DRAM mapping's
        design = NmpCore(kwargs, conf.dram) if top == "core" else \
            LrdimmNmp(kwargs, conf.dram, conf.window_params())
        engine = design.engine if top == "core" else design.core.engine
    else:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
    text = verilog.convert(design, name=name, emit_src=False)
    os.makedirs(out_dir, exist_ok=True)
    vpath = os.path.join(out_dir, f"{name}.v")
    with open(vpath, "w") as f:
        f.write(text)
    manifest = {
        "top": name, "verilog": os.path.basename(vpath),
        "parameters": conf.as_dict(),
        "clock": {"name": "clk", "reset": "rst (synchronous, active high)"},
        "ports": [{"name": "clk", "direction": "in", "width": 1},
                  {"name": "rst", "direction": "in", "width": 1}] + ports_of(design),
        "layouts": {"config": _fields(engine.Config), "counters": _fields(engine.Counters)},
        "register_map": ["refree_regmap.md", "refree_regmap.h"],
    }
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    regs = RegisterMap(engine.Config, engine.Counters, conf.window_params(),
                       bursts_per_row=conf.dram.geometry.bursts_per_row)
    with open(os.path.join(out_dir, "refree_regmap.md"), "w") as f:
        f.write(regs.markdown())
    with open(os.path.join(out_dir, "refree_regmap.h"), "w") as f:
        f.write(regs.c_header())
    return vpath, manifest


def _fields(layout):
    """Bit offset and width of each field of a packed port (nested fields dotted)."""
    from amaranth.lib import data
    out = {}

    def walk(lay, prefix, base):
        if isinstance(lay, data.ArrayLayout):
            for i in range(lay.length):
                walk(lay.elem_shape, f"{prefix}[{i}].", base + i * data.Layout.cast(lay.elem_shape).size)
            return
        for name, f in lay:
            shape = f.shape
            if isinstance(shape, data.Layout):
                walk(shape, f"{prefix}{name}.", base + f.offset)
            else:
                out[f"{prefix}{name}"] = {"offset": base + f.offset, "width": f.width}
    walk(layout, "", 0)
    return {k.replace(".[", "["): v for k, v in out.items()}
