"""The NMP window: where the host finds the engine's registers in DRAM coordinates, and the
register map itself.  One Python source for the hardware's register block, the generated
Markdown and C header (``refree generate``) and the host tools, so the documentation cannot
drift from the RTL.

The window is a range of rows of one bank of one rank.  Inside it the registers are 32-bit
words, sixteen to a 64-byte burst, burst ``k`` of the window at column ``8 * (k % B)`` of
window row ``k // B`` (``B`` bursts to a DRAM row).  A host reads or writes them with
ordinary ACT / RD / WR / PRE sequences to those rows; a write changes only the words it
carries (every word of a burst is written: the DDR4 data mask is not used).

Register groups, each from a burst boundary so that one burst never mixes them:

* ``ident``: ``ID`` (``0x52454652``, "REFR"), ``VERSION``;
* ``control``: ``CONTROL`` (write 1 to bit 0: start a job with the configuration held),
  ``STATUS`` (bit 0 busy, bits 8-15 the error code, bit 16 a sticky flag: a host command
  outside the window arrived during a job and was not executed), ``HOST_DROPPED`` (how many),
  ``CLEAR`` (write 1 to bit 0: clear the flag and the count);
* ``config``: every field of the engine's configuration (:attr:`Engine.Config`), in order,
  a field of up to 32 bits in one word, a wider one in consecutive words low word first;
* ``counters``: every counter (:attr:`Engine.Counters`), read-only, likewise.
"""
from dataclasses import dataclass

from amaranth.hdl import Shape
from amaranth.lib import data

from ..engine.staging import check_stripe

__all__ = ["Register", "RegisterMap", "WindowParams", "IDENT", "VERSION", "POISON_WORD"]

IDENT = 0x52454652          # "REFR"
POISON_WORD = 0x7FC0DEAD    # every 32-bit word of a refused read: a quiet NaN as binary32
VERSION = 1
WORDS_PER_BURST = 16


@dataclass(frozen=True)
class Register:
    """One register: ``name``, first 32-bit ``word`` of the window, ``width`` in bits (a
    register wider than 32 bits takes consecutive words, low first), ``access`` (``ro``,
    ``rw``, ``w1``: write 1 to act), ``group``, ``field`` (its path in the engine's
    configuration or counters, for those groups), ``doc``."""
    name: str
    word: int
    width: int
    access: str
    group: str
    field: str = ""
    doc: str = ""

    @property
    def words(self):
        return -(-self.width // 32)


@dataclass(frozen=True)
class WindowParams:
    """The window in DRAM coordinates: ``rows`` rows from ``row`` of bank ``(bg, ba)`` of
    rank ``rank``.  Defaults: the last row of bank (3, 3) of rank 0 (rows of 8 Gb devices)."""
    rank: int = 0
    bg: int = 3
    ba: int = 3
    row: int = (1 << 16) - 1
    rows: int = 1

    def __post_init__(self):
        for name, lo, hi in (("rank", 0, 7), ("bg", 0, 3), ("ba", 0, 3), ("row", 0, (1 << 18) - 1),
                             ("rows", 1, 1 << 10)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"WindowParams.{name} must be an integer in [{lo}, {hi}], not {v!r}")

    def check(self, ranks, geometry):
        """Raise ValueError, naming the field, if the window is not inside ``ranks`` ranks of
        ``geometry`` (a :class:`~refree.hw.ddr4.geometry.RankGeometry`)."""
        for name, value, limit in (("rank", self.rank, ranks), ("bg", self.bg, geometry.bank_groups),
                                   ("ba", self.ba, geometry.banks_per_group)):
            if value >= limit:
                raise ValueError(f"WindowParams.{name} must be below {limit} (the ranks' geometry), "
                                 f"not {value}")
        if self.row + self.rows > geometry.rows:
            raise ValueError(f"WindowParams.row + rows must be at most {geometry.rows} (the rows of "
                             f"a bank), not {self.row + self.rows}")


def _leaves(layout, prefix=""):
    """``(dotted path, width)`` of every leaf field of a struct or array layout, in order."""
    if not isinstance(layout, data.Layout):        # a leaf: an array element of plain bits
        yield prefix, Shape.cast(layout).width
        return
    if isinstance(layout, data.ArrayLayout):
        for i in range(layout.length):
            yield from _leaves(layout.elem_shape, f"{prefix}[{i}]")
        return
    for name, f in layout:
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(f.shape, data.Layout):
            yield from _leaves(f.shape, path)
        else:
            yield path, f.width


_FIXED = {
    "ident": [("ID", 32, "ro", f"0x{IDENT:08X} (\"REFR\")"), ("VERSION", 32, "ro", f"{VERSION}")],
    "control": [("CONTROL", 32, "w1", "bit 0: start a job with the configuration held"),
                ("STATUS", 32, "ro", "bit 0: busy; bits 8-15: error code; bit 16: a host command "
                                     "outside the window arrived during a job (sticky)"),
                ("HOST_DROPPED", 32, "ro", "host commands not executed during jobs"),
                ("CLEAR", 32, "w1", "bit 0: clear STATUS bit 16 and HOST_DROPPED")],
}


class RegisterMap:
    """The registers of an engine's window (see the module docstring).

    Parameters
    ----------
    config_layout, counters_layout : amaranth.lib.data.Layout
        The engine's ``Config`` and ``Counters``.
    window : WindowParams
    bursts_per_row : int
        Bursts of one DRAM row (128 for 1 KB pages on a 64-bit rank).
    """

    def __init__(self, config_layout, counters_layout, window=WindowParams(), bursts_per_row=128,
                 staging_stripe=1):
        check_stripe(staging_stripe)
        self.window, self.bursts_per_row = window, bursts_per_row
        # the layout of the pooled output and the gradient (hw/engine/staging.py): the host
        # lays them out by it, so the documents state it
        self.staging_stripe = staging_stripe
        regs, word = [], 0

        def add(name, width, access, group, field="", doc=""):
            nonlocal word
            regs.append(Register(name, word, width, access, group, field, doc))
            word += -(-width // 32)

        def next_burst():
            nonlocal word
            word = -(-word // WORDS_PER_BURST) * WORDS_PER_BURST

        for group, fixed in _FIXED.items():
            for name, width, access, doc in fixed:
                add(name, width, access, group, doc=doc)
            next_burst()
        for group, layout, access in (("config", config_layout, "rw"), ("counters", counters_layout, "ro")):
            for path, width in _leaves(layout):
                name = f"{group.upper()}_" + path.replace("[", "_").replace("]", "").replace(".", "_").upper()
                add(name, width, access, group, field=path)
            next_burst()
        self.registers = regs
        self.words = word
        if self.bursts > window.rows * bursts_per_row:
            raise ValueError(f"the register map needs {self.bursts} bursts; the window "
                             f"(WindowParams.rows = {window.rows}) holds {window.rows * bursts_per_row}")

    @property
    def bursts(self):
        return self.words // WORDS_PER_BURST

    def __getitem__(self, name):
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(name)

    def location(self, word):
        """``(rank, bg, ba, row, col)`` of the burst holding register word ``word`` and the
        word's lane in it."""
        burst, lane = divmod(word, WORDS_PER_BURST)
        w = self.window
        return (w.rank, w.bg, w.ba, w.row + burst // self.bursts_per_row,
                8 * (burst % self.bursts_per_row)), lane

    # -- documents ---------------------------------------------------------------------

    def markdown(self, title="ReFree NMP register map"):
        w = self.window
        lines = [f"# {title}", "",
                 "Generated by `refree generate` from `hw/lrdimm/regmap.py`; do not edit.", "",
                 f"Window: rank {w.rank}, bank group {w.bg}, bank {w.ba}, rows {w.row} to "
                 f"{w.row + w.rows - 1}.  Registers are 32-bit words, 16 to a 64-byte burst; "
                 f"burst k is column 8 x (k mod {self.bursts_per_row}) of window row "
                 f"k div {self.bursts_per_row}.  A register wider than 32 bits takes consecutive "
                 f"words, low word first.", "",
                 "Host protocol (hw/lrdimm/lrdimm_nmp.py, hw/lrdimm/ownership.py): read data "
                 "reaches the host CL + 2 clocks after its RD, write data goes CWL clocks after "
                 "its WR, so a WR after a RD on the host bus waits 2 clocks more than on a bare "
                 "DRAM.  To run a job, precharge every bank but the window's, be up to date with "
                 "refresh (no REF postponed), write the configuration words, write 1 to CONTROL "
                 "bit 0, stop refreshing and poll STATUS until bit 0 (busy) is clear; the NMP "
                 "pays the REFs it postponed and hands the ranks back with every bank "
                 "precharged and just refreshed.  While busy, a host command outside the window "
                 "is not executed: a read returns "
                 f"0x{POISON_WORD:08X} in every 32-bit word, a write is dropped, STATUS bit 16 "
                 "is set and HOST_DROPPED counts it; this holds for every command (ACT, RD, "
                 "WR, PRE, MRS, ZQC, ...) but REF, PREA and NOP, which are ignored and not "
                 "counted.  The DRAM rows under the window are not reachable by the host: keep "
                 "tables and staging out of them.", "",
                 f"Staging layout (hw/engine/staging.py): beat j of staging row r = b*T + t (bag b, "
                 f"table t) of the pooled output and of the upstream gradient is at "
                 f"`base + ((r div S)*D/16 + j)*S + r mod S` (64-byte beats), with the stripe "
                 f"S = {self.staging_stripe}.", "",
                 "| word | byte | name | bits | access | description |",
                 "|---:|---:|---|---:|---|---|"]
        for r in self.registers:
            doc = r.doc or (f"configuration field `{r.field}`" if r.group == "config"
                            else f"counter `{r.field}`")
            lines.append(f"| {r.word} | 0x{4 * r.word:04X} | `{r.name}` | {r.width} | {r.access} | {doc} |")
        return "\n".join(lines) + "\n"

    def c_header(self, guard="REFREE_REGMAP_H"):
        w = self.window
        lines = ["/* ReFree NMP register map.  Generated by `refree generate` from",
                 " * hw/lrdimm/regmap.py; do not edit. */",
                 f"#ifndef {guard}", f"#define {guard}", "",
                 f"#define REFREE_WINDOW_RANK {w.rank}u", f"#define REFREE_WINDOW_BG {w.bg}u",
                 f"#define REFREE_WINDOW_BA {w.ba}u", f"#define REFREE_WINDOW_ROW {w.row}u",
                 f"#define REFREE_WINDOW_ROWS {w.rows}u",
                 f"#define REFREE_BURSTS_PER_ROW {self.bursts_per_row}u",
                 f"#define REFREE_IDENT 0x{IDENT:08X}u", f"#define REFREE_VERSION {VERSION}u",
                 f"#define REFREE_POISON_WORD 0x{POISON_WORD:08X}u",
                 f"#define REFREE_REGMAP_WORDS {self.words}u",
                 "/* beat j of staging row r = b*T + t (pooled output, gradient) is at",
                 " * base + ((r / S)*D/16 + j)*S + r % S, S = REFREE_STAGING_STRIPE */",
                 f"#define REFREE_STAGING_STRIPE {self.staging_stripe}u", "",
                 "/* word index of each register in the window, its width in bits */"]
        for r in self.registers:
            lines.append(f"#define REFREE_{r.name}_WORD {r.word}u")
            lines.append(f"#define REFREE_{r.name}_BITS {r.width}u")
        lines += ["", f"#endif /* {guard} */", ""]
        return "\n".join(lines)
