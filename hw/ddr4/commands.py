"""DDR4 commands as the levels of the command pins (JEDEC JESD79-4 command truth table), shared
by the command engine that drives them and the testbench monitors that decode them.

Only what the engine issues is listed: ACT, RD and WR without auto-precharge, PRE of one
bank, PREA (A10 high), REF, and the deselect/NOP levels of an idle clock.  With ``ACT_n``
low the pins ``RAS_n/A16``, ``CAS_n/A15`` and ``WE_n/A14`` carry row-address bits.
"""
from dataclasses import dataclass

__all__ = ["PINS", "CommandPins", "encode", "decode", "A10"]

A10 = 10                        # the address bit that selects all banks on PRE (PREA)

# name: (ACT_n, RAS_n, CAS_n, WE_n, A10) with None where the pin carries an address bit
_TRUTH = {
    "ACT":  (0, None, None, None, None),
    "RD":   (1, 1, 0, 1, 0),
    "WR":   (1, 1, 0, 0, 0),
    "PRE":  (1, 0, 1, 0, 0),
    "PREA": (1, 0, 1, 0, 1),
    "REF":  (1, 0, 0, 1, None),
    "NOP":  (1, 1, 1, 1, None),
}
PINS = ("cs_n", "act_n", "ras_n", "cas_n", "we_n", "bg", "ba", "a")
"""The command pins of one rank, in the order of :class:`CommandPins`."""


@dataclass(frozen=True)
class CommandPins:
    """Levels of one rank's command pins in one clock (``a`` is A17..A0 without the bits that
    ``RAS_n``/``CAS_n``/``WE_n`` carry during an ACT)."""
    cs_n: int
    act_n: int
    ras_n: int
    cas_n: int
    we_n: int
    bg: int
    ba: int
    a: int


def encode(name, bg=0, ba=0, row=0, col=0):
    """The pin levels of command ``name`` (a key of the truth table) to bank ``(bg, ba)``:
    ``row`` for ACT (bits 16..14 go on RAS_n/CAS_n/WE_n), ``col`` for RD and WR."""
    act_n, ras_n, cas_n, we_n, a10 = _TRUTH[name]
    if name == "NOP":
        return CommandPins(1, 1, 1, 1, 1, 0, 0, 0)
    if name == "ACT":
        return CommandPins(0, 0, (row >> 16) & 1, (row >> 15) & 1, (row >> 14) & 1, bg, ba,
                           row & ~(0b111 << 14))
    a = col if name in ("RD", "WR") else 0
    return CommandPins(0, act_n, ras_n, cas_n, we_n, bg, ba, a | ((a10 or 0) << A10))


def decode(pins):
    """``(name, args)`` of the command on ``pins`` (a :class:`CommandPins`), with the
    arguments that :class:`refree.verif.ddr4_model.Ddr4RankModel` takes: ``(bg, ba, row)``
    for ACT, ``(bg, ba, col)`` for RD/WR, ``(bg, ba)`` for PRE, ``()`` otherwise.  A deselected
    clock (``cs_n`` high) or a NOP is ``("NOP", ())``; levels that are no command the engine
    issues raise ValueError."""
    if pins.cs_n:
        return "NOP", ()
    if not pins.act_n:
        row = pins.a | (pins.ras_n << 16) | (pins.cas_n << 15) | (pins.we_n << 14)
        return "ACT", (pins.bg, pins.ba, row)
    a10 = (pins.a >> A10) & 1
    for name, (act_n, ras_n, cas_n, we_n, want_a10) in _TRUTH.items():
        if name != "ACT" and (ras_n, cas_n, we_n) == (pins.ras_n, pins.cas_n, pins.we_n) \
                and want_a10 in (None, a10):
            if name in ("RD", "WR"):
                return name, (pins.bg, pins.ba, pins.a & ~(1 << A10))
            if name == "PRE":
                return name, (pins.bg, pins.ba)
            return name, ()
    raise ValueError(f"command pins {pins} are no command of the engine (RD/WR with "
                     f"auto-precharge, MRS, ZQ or reserved)")
