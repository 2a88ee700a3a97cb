"""Batch checker: reads the whole batch once and checks it, beside the analysis.

The engine may write nothing until the whole batch is known good (docs/design.md section 4), but
it need not wait for the check to *start* its work: forming parts and analysing them only
read.  So the check runs on its own two readers while the first part is being formed and
analysed, and the engine holds back the first write (the first item streamed) until
``done``; on an error it drops the analysis and ends the job with no write.

Checks, in the golden model's order of precedence (:mod:`refree.golden.errors`):

1. ``MALFORMED_OFFSETS``: offsets do not start at 0, decrease, or do not end at
   ``num_indices``;
2. ``WEIGHTS_WITH_MEAN``: per-sample weights with a table that pools by mean;
3. ``INDEX_OUT_OF_RANGE``: an index outside its table (negative ones are huge unsigned);
4. ``BAG_TOO_LONG``: a bag longer than ``max_bag_len``.

Offsets stream first (one per cycle, recording ``offsets[t*B]``, where table ``t``'s
indices start), then indices, up to 8 per cycle (a beat of int64, half a beat of int32): the
rest of the response beat (half beat) at the head that belongs to the current table (a beat
that spans tables takes a cycle per table); a failure in the offsets skips the indices.
int32 offsets and indices are sign-extended as they are read, so a negative one fails as
its int64 twin does.

Shared indices (``share`` at ``start``): the engine's first part reads the batch's first
indices too, at the same time, so the checker hands them over instead of the engine reading
them again: once the engine has said how many it takes (``share_count`` with ``share_set``;
the checker waits for it before its first index), each of the first ``share_count``
indices goes out on ``shared`` as the checker checks it and is taken by both in the same
cycle.  The input is then read once for a batch of one part.
Latency: ``T*B + 1`` cycles for the offsets, then ``ceil(num_indices / 8)`` (plus a cycle
per table boundary, and the shared indices at one a cycle) when the memory keeps up (at one
DDR4 rank it does not: its peak is a quarter beat a cycle), plus the memory's latency.
``done`` rises when the verdict is known and stays high until the next ``start``; reset
leaves it low.
"""
from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from refree.golden.errors import ErrorCode
from .memport import ArrayReader, mem_port

__all__ = ["BatchChecker"]


class BatchChecker(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    params : EngineParams
    config_layout : data.StructLayout
        The engine's ``Config`` (the fields read: batch_size, num_tables, num_indices,
        offsets_addr, indices_addr, offsets_int32, indices_int32, weighted, tables[t].rows and
        .mean).
    max_tables, addr_bits : int

    Members
    -------
    start : In(1)               pulse; ``config`` must hold until ``done``
    config : In(config_layout)
    share : In(1)               sampled at ``start``: hand the first indices to the engine
    share_count : In(32); share_set : In(1)     pulse: how many (see above)
    shared : Out(stream.Signature(64))          the shared indices
    done : Out(1); error : Out(8)   the verdict (0: the batch is good)
    offsets_port, indices_port : Out(mem_port(addr_bits))
    """

    def __init__(self, params, config_layout, max_tables, addr_bits):
        self.params, self.max_tables = params, max_tables
        super().__init__({"start": In(1), "config": In(config_layout),
                          "share": In(1), "share_count": In(32), "share_set": In(1),
                          "shared": Out(stream.Signature(64)),
                          "done": Out(1), "error": Out(8),
                          "offsets_port": Out(mem_port(addr_bits)), "indices_port": Out(mem_port(addr_bits))})

    def elaborate(self, platform):
        m = Module()
        p, cfg = self.params, self.config
        A = len(self.offsets_port.cmd.payload.addr)
        m.submodules.offsets = offs = ArrayReader(A)
        m.submodules.indices = idxr = ArrayReader(A)
        wiring.connect(m, offs.port, wiring.flipped(self.offsets_port))
        wiring.connect(m, idxr.port, wiring.flipped(self.indices_port))
        T, B = cfg.num_tables, cfg.batch_size
        t = Signal(range(self.max_tables + 2))
        tb = Signal(48)                         # t * B
        k = Signal(48)                          # elements taken
        prev = Signal(64)
        bound = Signal(data.ArrayLayout(32, self.max_tables + 1))  # offsets[t*B]
        too_long = Signal()
        error = self.error
        any_mean = Cat(*[cfg.tables[i].mean & (i < T) for i in range(self.max_tables)]).any()
        share, share_known, share_count = Signal(), Signal(), Signal(32)
        with m.If(self.share_set):
            m.d.sync += [share_known.eq(1), share_count.eq(self.share_count)]
        shared_now = share & (k < share_count)      # index k goes to the engine too

        with m.FSM(name="check"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [error.eq(0), too_long.eq(0), t.eq(0), tb.eq(0), k.eq(0), self.done.eq(0),
                                 share.eq(self.share), share_known.eq(0)]
                    m.d.comb += [offs.start.eq(1), offs.base.eq(cfg.offsets_addr), offs.first.eq(0),
                                 offs.narrow.eq(cfg.offsets_int32),
                                 offs.count.eq(T * B + 1)]
                    m.next = "OFFSETS"

            with m.State("OFFSETS"):
                v = offs.data.payload
                m.d.comb += offs.data.ready.eq(1)
                with m.If(offs.data.valid):
                    m.d.sync += [prev.eq(v), k.eq(k + 1)]
                    with m.If(k == tb):         # the first offset of table t
                        m.d.sync += [bound[t].eq(v), t.eq(t + 1), tb.eq(tb + B)]
                    with m.If((k == 0) & (v != 0)):
                        m.d.sync += error.eq(ErrorCode.MALFORMED_OFFSETS)
                    with m.If((k != 0) & (v.as_signed() < prev.as_signed())):
                        m.d.sync += error.eq(ErrorCode.MALFORMED_OFFSETS)
                    with m.Elif((k != 0) & (v - prev > p.max_bag_len)):
                        m.d.sync += too_long.eq(1)
                    with m.If((k == T * B) & (v != cfg.num_indices)):
                        m.d.sync += error.eq(ErrorCode.MALFORMED_OFFSETS)
                with m.If(~offs.busy):
                    m.d.sync += [t.eq(0), k.eq(0)]
                    with m.If((error == 0) & cfg.weighted & any_mean):
                        m.d.sync += [error.eq(ErrorCode.WEIGHTS_WITH_MEAN), self.done.eq(1)]
                        m.next = "IDLE"
                    with m.Elif(error == 0):
                        m.d.comb += [idxr.start.eq(1), idxr.base.eq(cfg.indices_addr), idxr.first.eq(0),
                                     idxr.narrow.eq(cfg.indices_int32),
                                     idxr.count.eq(cfg.num_indices)]
                        m.next = "INDICES"
                    with m.Else():
                        m.d.sync += self.done.eq(1)
                        m.next = "IDLE"

            with m.State("INDICES"):
                rows = cfg.tables[t].rows
                with m.If((t < T) & (k >= bound[t + 1])):   # index k belongs to a later table
                    m.d.sync += t.eq(t + 1)
                with m.Elif(share & ~share_known):
                    pass                        # how many the engine takes is not known yet
                with m.Elif(shared_now):        # one a cycle, handed over as it is checked
                    v = idxr.data.payload
                    m.d.comb += [idxr.data.ready.eq(self.shared.ready), self.shared.valid.eq(idxr.data.valid),
                                 self.shared.payload.eq(v)]
                    with m.If(idxr.data.valid & self.shared.ready):
                        m.d.sync += k.eq(k + 1)
                        with m.If(v >= rows):   # unsigned: negative is huge
                            m.d.sync += error.eq(ErrorCode.INDEX_OUT_OF_RANGE)
                with m.Else():                  # the rest of the beat, up to table t's end
                    beat, room = idxr.beat, bound[t + 1] - k
                    n = Mux(room < beat.avail, room, beat.avail)
                    N = len(beat.elems)
                    bad = Cat(*[((beat.lane <= i) if i < N - 1 else C(1, 1)) & (i < beat.lane + n)
                                & (beat.elems[i] >= rows) for i in range(N)]).any()
                    with m.If(beat.valid):
                        m.d.comb += idxr.take.eq(n)
                        m.d.sync += k.eq(k + n)
                        with m.If(bad):
                            m.d.sync += error.eq(ErrorCode.INDEX_OUT_OF_RANGE)
                with m.If(~idxr.busy):
                    m.d.sync += self.done.eq(1)
                    with m.If((error == 0) & too_long):
                        m.d.sync += error.eq(ErrorCode.BAG_TOO_LONG)
                    m.next = "IDLE"
        return m
