"""Behavioural simulation models of the ECP5 primitives that the units instantiate when
built for ECP5 (``dsp="ecp5"``), so that exact netlist can be simulated too.

Only the features the units use are modelled (an unsigned ``MULT18X18D`` with optional
input and output registers on ``CLK0``/``CE0``); anything else makes the model stop the
simulation with an error instead of computing something plausible.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MULT18X18D", "write_models"]


def _mult18x18d() -> str:
    ins = ([f"A{i}" for i in range(18)] + [f"B{i}" for i in range(18)] +
           [f"C{i}" for i in range(18)] +
           ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB"] +
           [f"CLK{i}" for i in range(4)] + [f"CE{i}" for i in range(4)] +
           [f"RST{i}" for i in range(4)])
    outs = [f"P{i}" for i in range(36)]
    params = {
        "REG_INPUTA_CLK": "NONE", "REG_INPUTA_CE": "CE0", "REG_INPUTA_RST": "RST0",
        "REG_INPUTB_CLK": "NONE", "REG_INPUTB_CE": "CE0", "REG_INPUTB_RST": "RST0",
        "REG_INPUTC_CLK": "NONE", "REG_INPUTC_CE": "CE0", "REG_INPUTC_RST": "RST0",
        "REG_PIPELINE_CLK": "NONE", "REG_PIPELINE_CE": "CE0", "REG_PIPELINE_RST": "RST0",
        "REG_OUTPUT_CLK": "NONE", "REG_OUTPUT_CE": "CE0", "REG_OUTPUT_RST": "RST0",
        "CLK0_DIV": "ENABLED", "CLK1_DIV": "ENABLED", "CLK2_DIV": "ENABLED",
        "CLK3_DIV": "ENABLED", "HIGHSPEED_CLK": "NONE", "GSR": "ENABLED",
        "CAS_MATCH_REG": "FALSE", "SOURCEB_MODE": "B_SHIFT", "MULT_BYPASS": "DISABLED",
        "RESETMODE": "SYNC",
    }
    a = ", ".join(f"A{i}" for i in reversed(range(18)))
    b = ", ".join(f"B{i}" for i in reversed(range(18)))
    p = ", ".join(f"P{i}" for i in reversed(range(36)))
    lines = ["// Behavioural model of the ECP5 MULT18X18D (unsigned, CLK0/CE0 registers only).",
             "module MULT18X18D #("]
    lines.append(",\n".join(f'    parameter {k} = "{v}"' for k, v in params.items()))
    lines.append(f") ({', '.join(ins + outs)});")
    lines += [f"    input wire {x};" for x in ins]
    lines += [f"    output wire {x};" for x in outs]
    lines += [
        f"    wire [17:0] a = {{{a}}};",
        f"    wire [17:0] b = {{{b}}};",
        "    reg [17:0] ra = 0, rb = 0;",
        "    reg [35:0] rp = 0;",
        '    wire [17:0] ia = (REG_INPUTA_CLK == "NONE") ? a : ra;',
        '    wire [17:0] ib = (REG_INPUTB_CLK == "NONE") ? b : rb;',
        "    wire [35:0] prod = ia * ib;",
        '    wire [35:0] p = (REG_OUTPUT_CLK == "NONE") ? prod : rp;',
        f"    assign {{{p}}} = p;",
        "    always @(posedge CLK0) if (CE0) begin",
        "        ra <= a;",
        "        rb <= b;",
        "        rp <= prod;",
        "    end",
        "    initial begin",
        '        if ((REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0") ||',
        '            (REG_INPUTB_CLK != "NONE" && REG_INPUTB_CLK != "CLK0") ||',
        '            (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0") ||',
        '            REG_PIPELINE_CLK != "NONE" || REG_INPUTA_CE != "CE0" ||',
        '            REG_INPUTB_CE != "CE0" || REG_OUTPUT_CE != "CE0") begin',
        '            $display("MULT18X18D model: unsupported configuration");',
        "            $finish;",
        "        end",
        "    end",
        "    always @* if (SIGNEDA !== 1'b0 || SIGNEDB !== 1'b0 || SOURCEA !== 1'b0 ||",
        "                  SOURCEB !== 1'b0) begin",
        "        if ($time > 0) begin",
        '            $display("MULT18X18D model: signed or cascaded use is not modelled");',
        "            $finish;",
        "        end",
        "    end",
        "endmodule",
    ]
    return "\n".join(lines) + "\n"


MULT18X18D = _mult18x18d()


def write_models(directory: Path) -> Path:
    """Write the models to ``directory/ecp5_models.v`` (if changed); return the path."""
    path = Path(directory) / "ecp5_models.v"
    if not path.is_file() or path.read_text() != MULT18X18D:
        path.write_text(MULT18X18D)
    return path
