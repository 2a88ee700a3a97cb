"""Rows in flight: the baseline backward job's guard against fetching a row again before
its previous update is written back (repeated rows must see each other's updates in
index order)."""
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RowsInFlight"]


class RowsInFlight(wiring.Component):
    """Addresses of rows fetched for an update and not yet written back, oldest first.

    ``hit`` says whether ``addr`` is one of them (or the table is ``full``); ``push`` adds
    ``addr``; ``pop`` drops the oldest (its last beat was written).  Rows are written back
    in the order they were fetched, so a circular buffer is enough.
    """

    def __init__(self, addr_bits, depth):
        self.depth = depth
        super().__init__({"addr": In(addr_bits), "hit": Out(1), "full": Out(1), "push": In(1), "pop": In(1)})

    def elaborate(self, platform):
        m = Module()
        N = self.depth
        addrs = [Signal.like(self.addr, name=f"addr{i}") for i in range(N)]
        valid = Signal(N)
        head, tail = Signal(range(N)), Signal(range(N))
        m.d.comb += self.full.eq(valid.all())
        m.d.comb += self.hit.eq(valid.all() | Cat(*[valid[i] & (addrs[i] == self.addr)
                                                   for i in range(N)]).any())
        with m.If(self.push):
            m.d.sync += tail.eq(Mux(tail == N - 1, 0, tail + 1))
            with m.Switch(tail):
                for i in range(N):
                    with m.Case(i):
                        m.d.sync += [addrs[i].eq(self.addr), valid[i].eq(1)]
        with m.If(self.pop):
            m.d.sync += head.eq(Mux(head == N - 1, 0, head + 1))
            with m.Switch(head):
                for i in range(N):
                    with m.Case(i):
                        m.d.sync += valid[i].eq(0)
        return m
