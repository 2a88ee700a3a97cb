"""One DDR4 rank behind its command pins, clock by clock: decodes the pins a command engine
drives (:mod:`refree.hw.ddr4.commands`), runs each command on a
:class:`~refree.verif.ddr4_model.Ddr4RankModel` (timing rules, backing store), takes write
data at WR + CWL and returns read data at RD + CL, as the DFI-style data ports of
:func:`refree.hw.ddr4.rank_controller.dfi_signature` carry them (a whole burst in the clock
of its first beat).  Simulator-agnostic: the Amaranth testbenches and the cocotb ones call
:meth:`PinDevice.clock` once per clock with what the controller drives, and
:meth:`PinDevice.read_data` for what to drive back (a cocotb testbench, which samples a
clock's outputs only after its inputs are set, asks for clock ``c + 1`` at the end of ``c``;
read data is never due sooner than CL clocks after its RD).
"""
from collections import deque

import numpy as np

from refree.hw.ddr4.commands import CommandPins, PINS, decode
from .ddr4_model import Ddr4RankModel

__all__ = ["PinDevice", "RULE_WRITE_DATA_SLOT"]

RULE_WRITE_DATA_SLOT = "write data not exactly CWL clocks after its WR"


class PinDevice:
    """The rank ``model`` (a :class:`Ddr4RankModel`) seen through its pins.

    Attributes
    ----------
    model : Ddr4RankModel
    errors : list of str
        Protocol errors that are not timing rules of the model: write data outside its
        slot, undecodable pin levels.
    rd_cycles, wr_cycles, ref_cycles : list of int
        Clocks of the RD, WR and REF commands seen.
    """

    def __init__(self, model):
        if not isinstance(model, Ddr4RankModel):
            raise ValueError(f"model must be a Ddr4RankModel, not {model!r}")
        self.model = model
        self.errors = []
        self.rd_cycles, self.wr_cycles, self.ref_cycles = [], [], []
        self._reads = deque()       # (cycle the burst is on the bus, data as int)
        self._writes = deque()      # (cycle its data is due, bg, ba, row or None, col)

    def clock(self, cycle, pins, wrdata_en=0, wrdata=0):
        """One clock: ``pins`` (a :class:`CommandPins` or a dict of :data:`PINS`) and the
        write-data port as the controller drives them in clock ``cycle``."""
        if not isinstance(pins, CommandPins):
            pins = CommandPins(**{k: int(pins[k]) for k in PINS})
        t = self.model.timing
        try:
            name, args = decode(pins)
        except ValueError as e:
            self.errors.append(f"cycle {cycle}: {e}")
            name, args = "NOP", ()
        if name == "RD":
            self.rd_cycles.append(cycle)
            data, due = self.model.rd(cycle, *args)
            self._reads.append((due, int.from_bytes(data.tobytes(), "little")))
        elif name == "WR":
            bg, ba, col = args
            self.wr_cycles.append(cycle)
            row = self.model.open_row(bg, ba)
            # the burst lands when its data arrives; until then the store keeps what it had
            keep = self.model.peek(bg, ba, row, col) if row is not None else bytes(64)
            self.model.wr(cycle, bg, ba, col, keep)
            self._writes.append((cycle + t.CWL, bg, ba, row, col))
        elif name != "NOP":
            if name == "REF":
                self.ref_cycles.append(cycle)
            self.model.issue(cycle, name, *args)

        due = bool(self._writes) and self._writes[0][0] == cycle
        if bool(wrdata_en) != due:
            self.errors.append(f"cycle {cycle}: {RULE_WRITE_DATA_SLOT} "
                               f"({'data without a WR' if wrdata_en else 'no data for a WR'})")
        if due:
            _, bg, ba, row, col = self._writes.popleft()
            if row is not None and wrdata_en:
                self.model.load(bg, ba, row, col, int(wrdata).to_bytes(64, "little"))

    def read_data(self, cycle):
        """``(rddata_valid, rddata)`` to drive in clock ``cycle`` (``rddata`` an int, burst
        byte 0 in the low bits); clocks must be asked for in order."""
        if self._reads and self._reads[0][0] < cycle:
            self.errors.append(f"cycle {cycle}: read data of cycle {self._reads[0][0]} never driven")
            self._reads.popleft()
        if self._reads and self._reads[0][0] == cycle:
            return 1, self._reads.popleft()[1]
        return 0, 0

    @property
    def pending(self):
        """Read or write data still due (a run should end with none)."""
        return len(self._reads) + len(self._writes)

    def peek_beat(self, bg, ba, row, col):
        """The burst at a location as an int (backdoor)."""
        return int.from_bytes(np.asarray(self.model.peek(bg, ba, row, col)).tobytes(), "little")
