"""Generated pages of ``docs/``: the NMP register map (``docs/register-map.md``) and the
chip's block diagram (``docs/blocks.md``).

The page is rendered from the project's own definitions, read-only:

* :class:`refree.hw.lrdimm.regmap.RegisterMap`: every register, its word, width and access,
  and the fixed registers' descriptions;
* :mod:`refree.hw.lrdimm.registers`: the STATUS bits and what a write does;
* the engine's ``Config`` and ``Counters`` layouts (:class:`refree.hw.engine.engine.Engine`),
  whose fields become the configuration and counter registers;
* :mod:`refree.golden.errors`: the error codes of STATUS bits 8-15.

It describes the chip of the default configuration (``gen/default_config.toml``), the one
``refree generate --top lrdimm`` writes with its own ``refree_regmap.md``.  The meaning of
each configuration and counter field is stated here, in :data:`CONFIG_FIELDS` and
:data:`COUNTER_FIELDS`, from the code that reads or counts it (``hw/engine/engine.py``); a
field of the layouts without an entry there makes rendering fail, naming the field.

The block diagram is the elaborated hierarchy of the same chip (``Fragment.get``): every
block of the project's own (``refree.hw``) down to :data:`DIAGRAM_DEPTH` levels, siblings
of one class drawn once with their count, and each block's queues and memories of
``amaranth.lib`` counted in its box; so it cannot drift from the code.

``python -m refree.gen.docs`` rewrites both pages; ``--check`` only compares (exit status 1
when a file differs).  ``tests/test_docs.py`` runs the comparison.
"""
import argparse
import re
import sys
from pathlib import Path

from refree.golden.errors import ErrorCode
from refree.hw.engine.engine import JOB_BACKWARD, JOB_FORWARD, MODE_BASELINE, MODE_DEDUP, MODE_REFREE
from refree.hw.lrdimm.lrdimm_nmp import READ_LATENCY_ADDED, LrdimmNmp
from refree.hw.lrdimm.ownership import handover_clocks
from refree.hw.lrdimm.regmap import IDENT, POISON_WORD, VERSION, WORDS_PER_BURST
from refree.hw.lrdimm.registers import STATUS_BUSY, STATUS_ERROR_SHIFT, STATUS_REFUSED

from .config import load_config

__all__ = ["register_map_markdown", "main", "DOCS_DIR", "CONFIG_FIELDS", "COUNTER_FIELDS"]

#: ``docs/`` of the repository (this file is ``gen/docs.py``).
DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
REGISTER_MAP = "register-map.md"

#: Meaning of each field of the engine's ``Config`` (``tables[]`` stands for every table).
CONFIG_FIELDS = {
    "job": f"{JOB_FORWARD}: forward job (pooled outputs written); {JOB_BACKWARD}: backward job "
           f"(upstream gradients read, rows updated)",
    "mode": f"{MODE_BASELINE}: `baseline`; {MODE_DEDUP}: `dedup`; {MODE_REFREE}: `refree`",
    "batch_size": "B, bags per table",
    "num_tables": "T, tables of the batch (descriptors `tables[0]` .. `tables[T-1]` are used)",
    "num_indices": "lookups of the batch (length of `indices`; offsets must end there)",
    "offsets_addr": "beat address of `offsets` (int64, or int32 with `offsets_int32`; T*B+1 elements)",
    "indices_addr": "beat address of `indices` (int64, or int32 with `indices_int32`)",
    "offsets_int32": "1: `offsets` is an int32 array (16 a beat, sign-extended as read); 0: int64",
    "indices_int32": "1: `indices` is an int32 array (16 a beat, sign-extended as read; half the input "
                     "beats of int64); 0: int64",
    "weighted": "1: per-sample weights are read beside the indices",
    "weights_addr": "beat address of the weights (float32, one per index)",
    "pooled_addr": "beat address of the pooled output: bag b of table t is row `r = b*T + t`, its beat j "
                   "at `pooled_addr + ((r // S)*D/16 + j)*S + r % S`, S the staging stripe (the manifest's "
                   "`staging_stripe`: 1 for the bare engine and with one rank, else `[dram] chunk_beats`; "
                   "docs/architecture.md)",
    "grad_addr": "beat address of the upstream gradient, laid out as the pooled output",
    "lr": "learning rate, binary32 bit pattern",
    "optimizer": "0: SGD; 1: row-wise Adagrad (`dedup` and `refree` only)",
    "eps": "Adagrad epsilon, binary32 bit pattern",
    "tables[].base": "beat address of the table's row 0",
    "tables[].rows": "rows of the table; every index of the table must be below it",
    "tables[].stride": "beats from one row to the next (at least D/16)",
    "tables[].mean": "1: the table pools by mean; 0: by sum",
    "tables[].state": "beat address of the table's Adagrad state (row r in lane r % 16 of beat state + r // 16)",
    "tables[].groups": "log2 G of the table's row groups in backward by rows (row r in the group of the XOR of its "
                       "log2 G-bit digits; "
                       "docs/design.md section 2): the host's choice, the fewest that fit "
                       "(`refree.golden.planner.row_groups`), else ROW_GROUP_TOO_LARGE",
}

#: Meaning of each field of the engine's ``Counters`` (memory traffic in 64-byte beats).
COUNTER_FIELDS = {
    "cycles": "cycles the engine was busy in the last job",
    "cycles_check": "cycles of the memory-map check, and cycles spent waiting for the batch check's verdict",
    "cycles_analysis": "cycles forming parts, inserting lookups and sorting (not waiting for the check)",
    "cycles_stream": "cycles streaming items through the scheduler, datapath and updaters",
    "cycles_drain": "cycles finishing a part (its last results and writes)",
    "input_reads": "beats of offsets, indices and weights read (the engine's and the batch check's readers)",
    "table_reads": "beats of table rows read",
    "table_writes": "beats of table rows written (backward)",
    "grad_reads": "beats of upstream gradient rows read (backward)",
    "state_reads": "beats of Adagrad state read",
    "state_writes": "beats of Adagrad state written",
    "pooled_writes": "beats of pooled output written (forward)",
    "adds": "vector operations whose addend is not the initial +0 (the counting rule of docs/design.md section 2)",
    "muls": "vector operations whose coefficient is not 1",
    "distinct_rows": "distinct rows, summed over the parts (backward by rows: over the row groups, each "
                     "distinct row once)",
    "parts": "parts processed (backward by rows: row-group passes that update, empty groups included; "
             "dry passes not counted)",
}


def _meaning(table, group, path):
    key = re.sub(r"\[\d+\]", "[]", path)
    if key not in table:
        raise KeyError(f"{group} field {path!r} has no meaning in refree.gen.docs "
                       f"({'CONFIG_FIELDS' if group == 'config' else 'COUNTER_FIELDS'}): add one")
    return table[key]


def _check_zero_reset(chip):
    """The reset column says 0 for every register but ID and VERSION: hold the code to it
    (the configuration's and the counters' signals have no other init)."""
    for component, member in ((chip.registers, "config"), (chip.core.engine, "counters"),
                              (chip.registers, "dropped"), (chip.registers, "sticky")):
        init = component.signature.members[member].init
        if init not in (None, 0):
            raise ValueError(f"{type(component).__name__}.{member} has init {init!r}; "
                             f"refree.gen.docs assumes 0")


def register_map_markdown(config_path=None):
    """The register map of the buffer chip of ``config_path`` (default: the default
    configuration) as the Markdown of ``docs/register-map.md``."""
    conf = load_config(config_path)
    engine_kwargs = conf.engine_kwargs()
    del engine_kwargs["addr_bits"]              # (the DRAM mapping's, as `refree generate`)
    chip = LrdimmNmp(engine_kwargs, conf.dram, conf.window_params())
    _check_zero_reset(chip)
    rm, w = chip.regmap, chip.regmap.window
    t = conf.dram.timing
    L = [
        "# NMP register map",
        "",
        "Generated by `python -m refree.gen.docs` (`gen/docs.py`) from `hw/lrdimm/regmap.py`,",
        "`hw/lrdimm/registers.py`, the engine's `Config` and `Counters` layouts",
        "(`hw/engine/engine.py`) and `golden/errors.py`. Do not edit; `tests/test_docs.py` fails",
        "when this file differs from what the code renders.",
        "",
        f"The chip is that of the default configuration (`gen/default_config.toml`: "
        f"`max_tables` = {conf.max_tables}, `index_width` = {conf.params.index_width}, "
        f"{conf.dram.ranks} {'rank' if conf.dram.ranks == 1 else 'ranks'} of {conf.dram.grade}; "
        f"beat addresses of {chip.mapping.addr_bits} bits, the DRAM mapping's). "
        "Another configuration changes the `CONFIG_*` and `COUNTER_*` words: "
        "`refree generate --top lrdimm --config FILE -o DIR` writes its map as `DIR/refree_regmap.md` "
        "and `DIR/refree_regmap.h`.",
        "",
        "## The window",
        "",
        f"* Place: rank {w.rank}, bank group {w.bg}, bank {w.ba}, "
        + (f"row {w.row}" if w.rows == 1 else f"rows {w.row} to {w.row + w.rows - 1}")
        + " (`[window]` of the configuration).",
        f"* Registers are 32-bit words, {WORDS_PER_BURST} to a 64-byte burst. Burst k is column "
        f"8 x (k mod {rm.bursts_per_row}) of window row k div {rm.bursts_per_row}. The map holds "
        f"{rm.words} words ({rm.bursts} bursts). A register wider than 32 bits takes consecutive words, "
        "low word first.",
        "* Access: an ACT of a window row, then RD or WR bursts, then PRE, as for DRAM. A write "
        "carries every word of its burst (no data mask): `rw` words take the value written; `w1` "
        "words act on a 1 in bit 0 and read 0; `ro` words and padding ignore writes. Configuration "
        "writes are ignored while STATUS bit 0 (busy) is set. A read of a window burst beyond the "
        "map returns 0.",
        f"* Latency: read data reaches the host CL + {READ_LATENCY_ADDED} clocks after its RD; write "
        "data goes CWL clocks after its WR, as for a bare DRAM.",
        "* A job: precharge every bank but the window's, owe no REF, write the configuration words, "
        "write 1 to CONTROL bit 0, stop refreshing, poll STATUS until bit 0 is clear, resume "
        f"refreshing. Each hand-over of the ranks takes {handover_clocks(t)} clocks at {conf.dram.grade} "
        "(`hw/lrdimm/ownership.py`: `handover_clocks`); the ranks come back precharged and refreshed.",
        f"* While busy, a host command outside the window is not executed: a RD returns "
        f"0x{POISON_WORD:08X} in every word, a WR is dropped, STATUS bit 16 is set and HOST_DROPPED "
        "counts it. REF, PREA and NOP are ignored and not counted.",
        f"* Reset: every register reads 0 after reset but ID (0x{IDENT:08X}) and VERSION ({VERSION}), "
        "which are constants. The counters are also cleared when a job starts.",
        "",
        "## STATUS",
        "",
        "| bits | meaning |",
        "|---|---|",
        f"| {STATUS_BUSY.bit_length() - 1} | busy: the NMP owns the ranks (take-over, job, hand-back) |",
        f"| {STATUS_ERROR_SHIFT}-{STATUS_ERROR_SHIFT + 7} | error code of the last job (0: none; table below) |",
        f"| {STATUS_REFUSED.bit_length() - 1} | sticky: a host command outside the window arrived during a "
        "job and was not executed (cleared by CLEAR bit 0) |",
        "",
        "| error code | name |",
        "|---:|---|",
        *[f"| {e.value} | `{e.name}` |" for e in ErrorCode],
        "",
        "`docs/architecture.md` (\"Error codes\") says when the engine sets each code.",
        "",
        "## Registers",
        "",
        "Word and byte: offset from the start of the window. DRAM: the window row, the burst's "
        "column and the word's lane in the burst.",
        "",
        "| word | byte | DRAM row, column, lane | name | bits | access | reset | meaning |",
        "|---:|---:|---|---|---:|---|---|---|",
    ]
    for r in rm.registers:
        (_, _, _, row, col), lane = rm.location(r.word)
        if r.group == "config":
            doc = f"`{r.field}`: " + _meaning(CONFIG_FIELDS, r.group, r.field)
        elif r.group == "counters":
            doc = f"`{r.field}`: " + _meaning(COUNTER_FIELDS, r.group, r.field)
        else:
            doc = r.doc
        reset = {"ID": f"0x{IDENT:08X}", "VERSION": f"{VERSION}"}.get(r.name, "0")
        L.append(f"| {r.word} | 0x{4 * r.word:04X} | {row}, {col}, {lane} | `{r.name}` | {r.width} "
                 f"| {r.access} | {reset} | {doc} |")
    return "\n".join(L) + "\n"


BLOCKS = "blocks.md"
DIAGRAM_DEPTH = 5       # the chip, the core, the engine, its blocks, their blocks


def _origin(fragment):
    """The elaboratable a fragment came from (through a DomainRenamer's wrapper)."""
    origins = [o for o in getattr(fragment, "origins", ()) or () if type(o).__name__ != "TransformedElaboratable"]
    return origins[0] if origins else None


def _hierarchy(fragment, name, depth):
    """[names, class, module, library parts, children] of a fragment and its subtree, the
    project's blocks (refree.hw) down to DIAGRAM_DEPTH, siblings of one class merged."""
    kids, library = {}, 0
    for sub, sub_name, *_ in fragment.subfragments:
        o = _origin(sub)
        if o is None or not type(o).__module__.startswith("refree.hw"):
            library += 1
        elif depth + 1 < DIAGRAM_DEPTH:
            kid = _hierarchy(sub, sub_name, depth + 1)
            key = (kid[1], kid[2])
            if key in kids:
                kids[key][0].append(sub_name)
            else:
                kids[key] = kid
    o = _origin(fragment)
    return [[name], type(o).__name__, type(o).__module__, library, list(kids.values())]


def block_diagram_markdown(config_path=None):
    """The block diagram of the buffer chip of ``config_path`` as ``docs/blocks.md``."""
    from amaranth.hdl import Fragment
    conf = load_config(config_path)
    engine_kwargs = conf.engine_kwargs()
    del engine_kwargs["addr_bits"]
    tree = _hierarchy(Fragment.get(LrdimmNmp(engine_kwargs, conf.dram, conf.window_params()), None), "chip", 0)
    lines, edges = [], []

    def node(item):
        names, cls, module, library, kids = item
        ident = f"n{len(lines)}"
        path = module.replace("refree.hw.", "hw/").replace(".", "/") + ".py"
        shown = ", ".join(names) if len(names) <= 3 else f"{names[0]} × {len(names)}"
        label = f"{shown}<br/>{cls}<br/><small>{path}</small>"
        if library:
            label += f"<br/><small>+ {library} of amaranth.lib (queues, memories)</small>"
        lines.append(f'    {ident}["{label}"]')
        for kid in kids:
            edges.append(f"    {ident} --> {node(kid)}")
        return ident
    node(tree)
    return "\n".join([
        "# Block diagram", "",
        "Generated by `python -m refree.gen.docs` (`gen/docs.py`) from the elaborated hierarchy of the",
        f"buffer chip of the default configuration (`gen/default_config.toml`: {conf.dram.ranks} rank(s), "
        f"D = {conf.dim}, {conf.fold_lanes} fold lanes): every block of `hw/` down to {DIAGRAM_DEPTH} levels, "
        "siblings of one class in one box (their names, or the first × their count), and the "
        "queues and memories of "
        "`amaranth.lib` each block holds. What each block does and how they connect: "
        "[architecture.md](architecture.md). `tests/test_docs.py` checks that this page is what the "
        "code renders.", "",
        "```mermaid", "flowchart TD", *lines, *edges, "```", ""])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m refree.gen.docs",
                                description="Rewrite the generated pages of docs/ (the register map, the "
                                            "block diagram).")
    p.add_argument("--out", metavar="FILE", default=str(DOCS_DIR / REGISTER_MAP),
                   help=f"where to write the register map (default: docs/{REGISTER_MAP} of the repository; "
                        f"the block diagram always goes to docs/{BLOCKS})")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the file differs from what the code renders")
    args = p.parse_args(argv)
    pages = [(Path(args.out), register_map_markdown()), (DOCS_DIR / BLOCKS, block_diagram_markdown())]
    if args.check:
        stale = [out for out, text in pages if (out.read_text() if out.exists() else None) != text]
        for out in stale:
            print(f"{out}: out of date; run `python -m refree.gen.docs`", file=sys.stderr)
        return 1 if stale else 0
    for out, text in pages:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
