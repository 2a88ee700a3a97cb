"""The DRAM side in Python, clock by clock: the same rules as the RTL's
:class:`~refree.hw.ddr4.dram_side.DramSide` and
:class:`~refree.hw.ddr4.rank_controller.RankController` (whose docstrings state them), so
that a stream of beat requests takes the clocks it takes on the chip.

What is modelled: each rank's window (FR-FCFS, reads first, write batching between the
watermarks, no passing an older access to the same burst when either writes), row commands
for any entry whose bank no older entry uses, every spacing of the timing table as a time
before which a command of its scope may not issue (bank, bank group, rank; tFAW over the
last four ACTs), refresh (owed every tREFI, paid when the window is empty or once
``postpone_limit`` are owed, after a PREA), the reorder buffer's ``read_depth`` reads, the
queue of ``RANK_QUEUE`` requests in front of each rank and the port's responses in port
order, and a rank idle only once its last write burst has left; each rank's queue fills in two
clocks, as Amaranth's ``SyncFIFOBuffered``.  What is not: the write-data slots (never full
while the window holds the writes).

``serve(requests, params)`` drives a stream through it as the chip's engine would at most
(a request a clock when the port takes it, every response taken at once) and returns the
clocks and the ranks' command counts; ``release`` gives each request a clock before which
the engine cannot offer it.
"""
from collections import deque
from dataclasses import dataclass

from refree.hw.ddr4.dram_side import RANK_QUEUE

__all__ = ["RankModel", "DramSideModel", "serve", "ServeResult"]

_QUEUE_LATENCY = 2          # a buffered FIFO: written in clock c, readable in c + 2


class RankModel:
    """One rank's command engine (the rules of ``RankController``), advanced a clock at a
    time by :meth:`clock`."""

    def __init__(self, timing, geometry, *, window, read_depth, write_high, write_low, postpone_limit):
        self.t, self.g = timing, geometry
        self.W, self.D = window, read_depth
        self.write_high, self.write_low, self.postpone_limit = write_high, write_low, postpone_limit
        nb, ng = geometry.banks, geometry.bank_groups
        self.bpg = geometry.banks_per_group
        self.win = []                   # [bank, row, burst, write, tag]
        self.writes_waiting = 0
        self.draining = False
        self.open_row = [None] * nb     # the open row of each bank
        self.used = [False] * nb
        # each spacing: the clock from which a command of its scope may issue
        self.act_b, self.cas_b, self.pre_b = [0] * nb, [0] * nb, [0] * nb
        self.act_g, self.rd_g, self.wr_g = [0] * ng, [0] * ng, [0] * ng
        self.act_r = self.rd_r = self.wr_r = self.ref_r = 0
        self.faw = deque([0, 0, 0, 0])  # the clocks from which each of the last four ACTs allows one
        self.owed = 0
        self.reads_open = 0             # accepted, not yet left
        self.next_tag = 0
        self.rob = {}                   # tag -> clock the burst is in the reorder buffer
        self.rob_head = 0
        self.stats = dict(acts=0, reads=0, writes=0, pres=0, refs=0, hits=0)
        self.writes_sent = 0            # the clock from which every write burst has left

    def can_take(self, write):
        return len(self.win) < self.W and (write or self.reads_open < self.D)

    def take(self, bank, row, burst, write):
        tag = None
        if not write:
            tag = self.next_tag
            self.next_tag = (self.next_tag + 1) % self.D
            self.reads_open += 1
        self.win.append([bank, row, burst, write, tag])
        self.writes_waiting += write

    def response_ready(self, now):
        """The next read in request order is in the reorder buffer at clock ``now``."""
        at = self.rob.get(self.rob_head)
        return at is not None and at <= now

    def pop_response(self):
        del self.rob[self.rob_head]
        self.rob_head = (self.rob_head + 1) % self.D
        self.reads_open -= 1

    def idle(self, now):
        return not self.win and self.reads_open == 0 and now >= self.writes_sent

    def clock(self, now):
        """The command of clock ``now`` (its state at the clock's start), then the state's
        updates."""
        t = self.t
        if now and now % t.tREFI == 0:         # refi wrapped at the clock before
            self.owed += 1
        refresh = self.owed and (not self.win or self.owed >= self.postpone_limit)
        cmd = None
        if refresh:
            open_banks = [b for b, r in enumerate(self.open_row) if r is not None]
            if open_banks:
                if all(self.pre_b[b] <= now for b in open_banks):
                    cmd = ("prea", None)
            elif self.ref_r <= now:
                cmd = ("ref", None)
        else:
            cmd = self._column(now) or self._row(now)
        if cmd is not None:
            self._issue(now, *cmd)
        return cmd

    def end(self, writes_waiting_at_start):
        """The draining register follows the count of waiting writes at the clock's start."""
        if writes_waiting_at_start >= self.write_high:
            self.draining = True
        elif writes_waiting_at_start <= self.write_low:
            self.draining = False

    def _column(self, now):
        win = self.win
        rd = wr = None
        # An access waits for an older one of its burst: a read for an older write, a write
        # for any older access (the bursts seen so far, and those of older writes).
        seen, seen_writes = set(), set()
        for i, (bank, row, burst, write, tag) in enumerate(win):
            key = (bank, row, burst)
            blocked = key in (seen if write else seen_writes)
            seen.add(key)
            if write:
                seen_writes.add(key)
            if blocked or self.open_row[bank] != row or self.cas_b[bank] > now:
                continue
            g = bank // self.bpg
            if write:
                if wr is None and self.wr_g[g] <= now and self.wr_r <= now:
                    wr = i
            elif rd is None and self.rd_g[g] <= now and self.rd_r <= now:
                rd = i
            if rd is not None and wr is not None:
                break
        head_write = win[0][3] if win else False
        if wr is not None and (self.draining or rd is None and head_write):
            return ("wr", wr)
        if rd is not None and (not self.draining or wr is None and not head_write):
            return ("rd", rd)
        return None

    def _row(self, now):
        act_rank_ok = self.act_r <= now and self.faw[0] <= now
        banks_seen = set()
        for i, (bank, row, burst, write, tag) in enumerate(self.win):
            if bank in banks_seen:
                continue
            banks_seen.add(bank)
            open_row = self.open_row[bank]
            if open_row is None:
                if act_rank_ok and self.act_b[bank] <= now and self.act_g[bank // self.bpg] <= now:
                    return ("act", i)
            elif open_row != row and self.pre_b[bank] <= now:
                return ("pre", i)
        return None

    def _issue(self, now, kind, i):
        t, s = self.t, self.stats
        if kind in ("rd", "wr"):
            bank, row, burst, write, tag = self.win.pop(i)
            g = bank // self.bpg
            s["hits"] += self.used[bank]
            self.used[bank] = True
            if kind == "rd":
                s["reads"] += 1
                self.pre_b[bank] = max(self.pre_b[bank], now + t.tRTP)
                self.rd_g[g] = max(self.rd_g[g], now + t.tCCD_L)
                self.rd_r = max(self.rd_r, now + t.tCCD_S)
                self.wr_r = max(self.wr_r, now + t.rd_to_wr)
                # on the pins at now + 1, data CL later, in the reorder buffer the clock after
                self.rob[tag] = now + 1 + t.CL + 1
            else:
                s["writes"] += 1
                self.writes_sent = now + t.CWL + 2     # its data slot free again
                self.writes_waiting -= 1
                self.pre_b[bank] = max(self.pre_b[bank], now + t.wr_to_pre)
                self.rd_g[g] = max(self.rd_g[g], now + t.wr_to_rd_l)
                self.wr_g[g] = max(self.wr_g[g], now + t.tCCD_L)
                self.rd_r = max(self.rd_r, now + t.wr_to_rd_s)
                self.wr_r = max(self.wr_r, now + t.tCCD_S)
        elif kind == "act":
            bank, row = self.win[i][0], self.win[i][1]
            s["acts"] += 1
            self.open_row[bank], self.used[bank] = row, False
            self.act_b[bank] = max(self.act_b[bank], now + t.tRC)
            self.cas_b[bank] = max(self.cas_b[bank], now + t.tRCD)
            self.pre_b[bank] = max(self.pre_b[bank], now + t.tRAS)
            g = bank // self.bpg
            self.act_g[g] = max(self.act_g[g], now + t.tRRD_L)
            self.act_r = max(self.act_r, now + t.tRRD_S)
            self.faw.popleft()
            self.faw.append(now + t.tFAW)
        elif kind == "pre":
            bank = self.win[i][0]
            s["pres"] += 1
            self.open_row[bank] = None
            self.act_b[bank] = max(self.act_b[bank], now + t.tRP)
            self.ref_r = max(self.ref_r, now + t.tRP)
        elif kind == "prea":
            for b, r in enumerate(self.open_row):
                if r is not None:
                    s["pres"] += 1
                    self.act_b[b] = max(self.act_b[b], now + t.tRP)
                    self.open_row[b] = None
            self.ref_r = max(self.ref_r, now + t.tRP)
        elif kind == "ref":
            s["refs"] += 1
            self.owed -= 1
            self.act_r = max(self.act_r, now + t.tRFC)
            self.ref_r = max(self.ref_r, now + t.tRFC)


class DramSideModel:
    """The whole DRAM side of ``params`` (:class:`~refree.hw.ddr4.params.DramParams`) behind
    the engine's port, a clock at a time: in each clock the engine may :meth:`offer` one
    request (taken or not, as the port's ``ready`` says), then :meth:`clock` runs the clock and
    returns the read that left on the port's response, if any (its ``tag``).  ``now`` is the
    clock about to run."""

    def __init__(self, params, *, reads_in_flight=None):
        mapping = params.mapping
        self.ranks = [RankModel(params.timing, mapping.geometry, **params.controller_kwargs())
                      for _ in range(mapping.ranks)]
        self.reads_in_flight = reads_in_flight or mapping.ranks * params.read_depth
        off = mapping.offsets()
        self._fields = [off[n] for n in ("rank", "col_hi", "col_lo", "bg_hi", "bg0", "ba", "row")]
        self._bpg = mapping.geometry.banks_per_group
        self.queues = [deque() for _ in self.ranks]     # (clock readable, bank, row, burst, write)
        self.order = deque()                            # the tag of each read in flight, in port order
        self._order_ranks = deque()                     # and its rank
        self.now = 0

    def decode(self, beat):
        """(rank, bank, row, burst) of a beat address."""
        (ro, rw), (cho, chw), (clo, clw), (bho, bhw), (b0o, b0w), (bao, baw), (rwo, rww) = self._fields

        def f(o, w):
            return (beat >> o) & ((1 << w) - 1)
        burst = (f(cho, chw) << clw) | f(clo, clw)
        bg = (f(bho, bhw) << b0w) | f(b0o, b0w)
        return f(ro, rw), bg * self._bpg + f(bao, baw), f(rwo, rww), burst

    def offer(self, beat, write, tag=None):
        """The port's command in this clock: True if it is taken."""
        rank, bank, row, burst = self.decode(beat)
        if len(self.queues[rank]) >= RANK_QUEUE or not write and len(self.order) >= self.reads_in_flight:
            return False
        self.queues[rank].append((self.now + _QUEUE_LATENCY, bank, row, burst, bool(write)))
        if not write:
            self.order.append(tag)
            self._order_ranks.append(rank)
        return True

    def clock(self):
        """Run the clock: every decision on the registers at its start (which queue heads each
        rank takes, the response, the commands), their effects seen the clock after.  Returns
        ``(tag,)`` of the read whose response left in this clock, or ``()``."""
        now, ranks, queues = self.now, self.ranks, self.queues
        takes = [bool(q) and q[0][0] <= now and r.can_take(q[0][4]) for r, q in zip(ranks, queues)]
        waiting = [r.writes_waiting for r in ranks]
        out = ()
        if self.order and ranks[self._order_ranks[0]].response_ready(now):
            ranks[self._order_ranks.popleft()].pop_response()
            out = (self.order.popleft(),)
        for r, q, take, ww in zip(ranks, queues, takes, waiting):
            r.clock(now)
            r.end(ww)
            if take:
                _, bank, row, burst, write = q.popleft()
                r.take(bank, row, burst, write)
        self.now = now + 1
        return out

    def idle(self):
        """Nothing queued or in flight, every write burst sent."""
        return not self.order and all(not q for q in self.queues) and all(r.idle(self.now) for r in self.ranks)

    @property
    def stats(self):
        return [r.stats for r in self.ranks]


@dataclass
class ServeResult:
    cycles: int                 # from the first offer to the last response (and every rank idle)
    stats: list                 # per rank: acts, reads, writes, pres, refs, hits
    accepted: list              # the clock each request was taken by the port
    answered: list              # per read, in port order, the clock its response left


def serve(requests, params, *, release=None, reads_in_flight=None, max_cycles=50_000_000):
    """Drive ``requests`` ([(beat, write)]) through the DRAM side of ``params``
    (:class:`~refree.hw.ddr4.params.DramParams`): a request offered each clock once the one
    before it was taken (and not before ``release[k]``), every response taken at once."""
    dram = DramSideModel(params, reads_in_flight=reads_in_flight)
    accepted, answered = [], []
    k, n = 0, len(requests)
    while dram.now < max_cycles:
        if k < n and (release is None or release[k] <= dram.now) and dram.offer(*requests[k]):
            accepted.append(dram.now)
            k += 1
        if dram.clock():
            answered.append(dram.now - 1)
        if k == n and dram.idle():
            return ServeResult(dram.now, dram.stats, accepted, answered)
    raise RuntimeError(f"the DRAM side model did not serve {n} requests within {max_cycles} clocks")
