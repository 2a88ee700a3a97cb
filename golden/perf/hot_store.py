"""The hot-row store (hw/lrdimm/hot_row_store.py) in front of the DRAM side model, for the
performance model: the interface of :class:`~refree.golden.perf.dram_side.DramSideModel`
(``offer`` a request in a clock, ``clock`` runs it and returns the read that left, ``idle``,
``now``, ``stats``), with the store's timing taken from its RTL:

* one command in the lookup's second stage at a time: a command taken in clock c is served
  in clock c + 1 (the tags read in c), and the next is taken in the clock the one before it
  is served;
* a miss is offered to the DRAM side in its serving clock, and holds the stage until taken;
* a hit is a read of the SRAM in its serving clock, in the hits' queue the clock after, out
  at the port ``HIT_TO_PORT`` clocks after its serving clock when the reads before it have
  left; a write hit is done in its serving clock;
* reads leave in port order, one a clock, whoever served them (the order queue, of
  ``order_depth`` entries: a read waits in the stage while it is full; a hit's beat waits
  in a queue as deep, whose last place the RTL keeps free: left out here).

``stats`` are the DRAM side's; ``hits`` counts the beats the store served."""
from collections import deque

from refree.hw.lrdimm.hot_row_store import order_depth
from .dram_side import DramSideModel

__all__ = ["HotStoreModel", "HIT_TO_PORT"]

HIT_TO_PORT = 3     # the SRAM read (1), the hits' queue (a SyncFIFOBuffered: 2)


class HotStoreModel:
    def __init__(self, params, hot_beats, *, reads_in_flight=None):
        self.dram = DramSideModel(params, reads_in_flight=reads_in_flight)
        self.order_depth = order_depth(self.dram.reads_in_flight)
        self.hot = frozenset(hot_beats)
        self.stage = None           # (beat, write, tag): taken, served from the next clock
        self.taken_at = -1
        self.order = deque()        # per read in port order: [tag, clock its beat is there, or None]
        self.from_dram = deque()    # the DRAM side's reads in flight, in their order: their order entries
        self.hits = 0

    @property
    def now(self):
        return self.dram.now

    @property
    def stats(self):
        return self.dram.stats

    def _serve(self):
        """The stage's command in its serving clock: True if it left the stage."""
        if self.stage is None or self.taken_at >= self.now:
            return False
        beat, write, tag = self.stage
        if not write and len(self.order) >= self.order_depth:
            return False
        if beat in self.hot:
            self.hits += 1
            if not write:
                self.order.append([tag, self.now + HIT_TO_PORT])
        elif self.dram.offer(beat, write, tag):
            if not write:
                entry = [tag, None]
                self.order.append(entry)
                self.from_dram.append(entry)
        else:
            return False
        self.stage = None
        return True

    def offer(self, beat, write, tag=None):
        self._serve()
        if self.stage is not None:
            return False
        self.stage, self.taken_at = (beat, write, tag), self.now
        return True

    def clock(self):
        c = self.now
        self._serve()
        for _ in self.dram.clock():     # (its reads come back in the order they went)
            self.from_dram.popleft()[1] = c
        out = ()
        if self.order and self.order[0][1] is not None and self.order[0][1] <= c:
            out = (self.order.popleft()[0],)
        return out

    def idle(self):
        return self.stage is None and not self.order and self.dram.idle()
