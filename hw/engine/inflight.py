"""Rows in flight: the rows (or Adagrad's state beats) fetched for an update and not yet
written back, so that an update that reads what an earlier one writes sees it: row-wise
Adagrad waits for the earlier write; ``baseline`` takes the earlier update's result from
the row forwarder (:mod:`.forwarder`) instead of waiting."""
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RowsInFlight"]


class RowsInFlight(wiring.Component):
    """Addresses of rows fetched for an update and not yet written back, oldest first, in
    ``depth`` slots used round robin.

    ``hit`` says whether ``addr`` is one of them (or the table is ``full``); ``push`` (only
    when not ``full``) adds ``addr`` in slot ``slot``; ``pop`` drops the oldest (its last beat was written).  Rows
    are written back in the order they were fetched, so a circular buffer is enough.
    ``latest_hit`` and ``latest`` name the slot of the youngest push of ``addr`` still held
    (a push supersedes the entry it finds, so at most one entry per address is the latest).
    Combinational from ``addr`` to ``hit`` and ``latest``; reset: empty.
    """

    def __init__(self, addr_bits, depth):
        self.depth = depth
        super().__init__({"addr": In(addr_bits), "hit": Out(1), "full": Out(1), "push": In(1), "pop": In(1),
                          "slot": Out(range(depth)), "latest_hit": Out(1), "latest": Out(range(depth))})

    def elaborate(self, platform):
        m = Module()
        N = self.depth
        addrs = [Signal.like(self.addr, name=f"addr{i}") for i in range(N)]
        valid, latest = Signal(N), Signal(N)     # held; held and the youngest of its address
        head, tail = Signal(range(N)), Signal(range(N))
        match = Cat(*[addrs[i] == self.addr for i in range(N)])
        m.d.comb += [self.full.eq(valid.all()), self.hit.eq(valid.all() | (valid & match).any()),
                     self.slot.eq(tail), self.latest_hit.eq((latest & match).any())]
        for i in range(N):
            with m.If(latest[i] & match[i]):
                m.d.comb += self.latest.eq(i)
        with m.If(self.push):
            m.d.sync += tail.eq(Mux(tail == N - 1, 0, tail + 1))
            with m.If(self.latest_hit):
                m.d.sync += latest.bit_select(self.latest, 1).eq(0)
            with m.Switch(tail):
                for i in range(N):
                    with m.Case(i):
                        m.d.sync += [addrs[i].eq(self.addr), valid[i].eq(1), latest[i].eq(1)]
        with m.If(self.pop):
            m.d.sync += head.eq(Mux(head == N - 1, 0, head + 1))
            with m.Switch(head):
                for i in range(N):
                    with m.Case(i):
                        m.d.sync += [valid[i].eq(0), latest[i].eq(0)]
        return m
