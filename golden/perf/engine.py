"""The engine's jobs in Python, against the DRAM side model (:mod:`.dram_side`) clock by clock:
cycles of a job without simulating the RTL.

Each job runs the engine's phases (docs/architecture.md, "A job") as a few rules, each with
the rate its hardware docstring gives; every request to memory goes through the DRAM side
model, offered by the arbiter's priorities (the writer, the gradient rows, the input arrays,
the table rows, Adagrad's state beats: hw/engine/engine.py).

* A part (a row group's pass: its chunks) starts by reading its bags' offsets, an offset a
  cycle as their beats arrive (``PART_OFFSETS``).
* Its lookups enter the analyzer a cycle each as their index beats arrive (read
  ``index_beats_ahead`` ahead); backward by rows passes over a run of other groups' lookups
  (to the end of the index beat or of the bag) in one cycle.  ``dedup`` and ``refree``
  fetch each distinct row at its first lookup (not in a dry pass); backward reads a bag's
  gradient row at its first lookup of the group.
* The batch check reads the whole input beside the first part (its indices shared) and
  its verdict opens the write gate; the first part of ``dedup`` and ``refree`` streams only
  after it (hw/engine/batch_checker.py).
* Forward (``dedup``, ``refree``): after the last lookup the analyzer's tail and its sort,
  ``W * (n + 3)`` cycles for W walk passes (hw/engine/sorter.py); then the members, rows in
  row order, through the sharing scheduler (hw/engine/scheduler.py: ``dedup`` a cycle an
  operation, the pair's multiplicity of them; ``refree`` a member a cycle, an operation per
  trie node on classes numbered from a FIFO free list, members of a class split with another
  coefficient deferred to rounds of two cycles a member) into the fold datapath
  (hw/engine/datapath.py: a window of ``fold_window`` operations, a ring of
  ``fold_window + 2`` row slots loaded in item order, the dependency and read-after-write
  rules); after a bag's last member its final, then its pooled row.
* Backward by rows: each bag's pairs are merged in the fold once the bag is whole (beside
  the analysis); after the pass, each distinct row's update, ``D / 16`` cycles on the
  updater once its row has arrived.
* Row-wise Adagrad (backward by rows): each row's update in slot order takes a lock on its
  state beat and reads it, then passes the Adagrad unit (:class:`_Adagrad`: groups of rows,
  their squares in steps, the scalars' latency, the update on the same lanes); its row and
  state beat are written as they leave.
* Forward results and rows updated by slot queue and go to memory ``WRITE_BURST`` beats at a
  time, or at the part's end (``PART_FINISH``).
* ``baseline``: its lookups stream beside the analysis: forward in the lookup buffer's order
  (16 bags interleaved), a row read (``row_reads_ahead`` beats in flight) and an operation
  each; backward in index order, a gradient row and a table row read, ``D / 16`` cycles on
  the updater and the row written, ``rows_in_flight`` lookups from their reads to their
  write (the forwarder's slots).

:class:`EngineTimes` holds every constant, each read off the RTL (its docstrings and
parameters) or, where none says, measured on its counters.  ``python -m refree.golden.perf``
compares the model with the RTL's cycles of a ``refree bench`` report.  Left out: weighted
bags' coefficient work (their weights are read), mean pooling's divider; ``refree``'s backward
merge is an operation per (bag, row) pair, without the classes it shares and their rounds.
It models the default engine: one fold operation a cycle (D /
fold lanes = 1), the sorter's 9-bit digits.
"""
import itertools
from collections import Counter, deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from refree.golden.planner import partition, plan_part, row_group_of
from .dram_side import DramSideModel
from .hot_store import HotStoreModel
from .traffic import backward_passes, buffer_order, row_beats, staging_row_beats

__all__ = ["EngineTimes", "ModelRun", "job_cycles", "fold_alone_cycles", "WRITE_BURST"]

WRITE_BURST = 32            # hw/engine/engine.py: batched writes go in bursts of this many beats
BURST_QUEUE = 2 * WRITE_BURST   # its queue's beats (hw/engine/engine.py burst_q)
CHECKED_PER_CYCLE = 8       # indices the batch checker checks a cycle (int64 or int32)


@dataclass(frozen=True)
class EngineTimes:
    """The engine's fixed costs, in cycles (see the module docstring)."""
    part_start: int = 4             # PART_START, and the offsets reader's first request
    check_latency: int = 24         # the batch check's last index read to its verdict
    index_beats_ahead: int = 16     # the lookup walker's index beats in flight
    analyzer_tail: int = 12         # the insertion pipeline after the last lookup
    fold_latency: int = 14          # an operation's issue to the first a reader of its sum may issue (FMA L + 1)
    slot_release: int = 2           # an item's last issue to its row slot's reuse (release, then alloc cleared)
    fold_window: int = 8            # the fold datapath's issue window (64 lanes)
    result_latency: int = 8         # a bag's last operation done to its pooled row's first write
    row_reads_ahead: int = 128      # hw/engine/engine.py ROW_READS_AHEAD (beats)
    forward_latency: int = 16       # baseline backward: a forwarded row's wait for its source's result,
                                    # the updater's latency (hw/engine/forwarder.py)
    rows_in_flight: int = 32        # IN_FLIGHT_ROWS: baseline backward's forwarder slots, Adagrad's state-beat locks
    radix_bits: int = 9             # the sorter's digits
    adagrad_lanes: int = 4          # the configuration's [engine] adagrad_lanes (P)
    adagrad_group: int = 16         # hw/engine/adagrad.py: most rows whose squares interleave
    adagrad_step: int = 17          # a step of the squares at least: ROUND_TRIP + the FMA's 13
    adagrad_scalar_latency: int = 150   # the scalars: 3 adds, a divide, an add, a root, an add, a divide (8, 34, 34)
    adagrad_out_latency: int = 15   # an update's last issue to its row leaving (the FMA's 13, gathering)
    state_reads_ahead: int = 4      # hw/engine/engine.py state_q: state beats asked ahead
    final_scan: int = 2             # forward: a member's class read for the finals of bags without members
    round_start: int = 4            # refree: a round of deferred members' start (hw/engine/scheduler.py)


class _Port:
    """The engine's side of the memory port: a FIFO of asks per user, offered a clock at a
    time by the arbiter's priorities (hw/engine/engine.py: the writer, then the gradient
    rows, then the input arrays, then the table rows, then Adagrad's state beats).  A
    write's tag counts once the port has taken it."""
    USERS = ("write", "grad", "input", "row", "state")

    def __init__(self, params, hot_beats=None):
        # (with a hot-row store, the store in front of the DRAM side: golden/perf/hot_store.py)
        self.dram = DramSideModel(params) if hot_beats is None else HotStoreModel(params, hot_beats)
        self.asks = {u: deque() for u in self.USERS}     # (beat, write, tag)
        self.arrived = {}               # tag -> beats of it that have left the port
        self.writes_from = None         # the write gate: the clock of the batch check's verdict
        self.burst_q = deque()          # batched writes (forward results, rows updated by slot)
        self.bursting = False
        self.flushing = False           # PART_FINISH: the burst queue goes whatever its level
        self.writes_taken = 0           # write beats the port has taken
        self.verdict = None             # the check under way: (its beats, the clock it has checked by)
        self.check_started = False
        self.unit = 0                   # the part (pass) under way: its requests' tags

    @property
    def now(self):
        return self.dram.now

    def ask(self, user, beats, tag=None, scoped=True):
        """Requests of ``user``; their responses count under ``tag`` (the unit's own, so that
        a part never takes an earlier part's arrival for its own, unless not ``scoped``)."""
        key = (self.unit, tag) if scoped and tag is not None else tag
        for b in beats:
            self.asks[user].append((b, user == "write", key))

    def batch(self, beats):
        """Writes that queue and go to memory ``WRITE_BURST`` beats at a time (hw/engine/engine.py),
        or whatever is queued while ``flushing``; False (nothing queued) when the queue's
        ``BURST_QUEUE`` beats have no room for them."""
        if len(self.burst_q) + len(beats) > BURST_QUEUE:
            return False
        self.burst_q.extend(beats)
        return True

    def tick(self):
        # the burst queue: full bursts, or a flush, into the writer's asks a beat a clock
        if len(self.burst_q) >= WRITE_BURST:
            self.bursting = True
        elif not self.burst_q:
            self.bursting = False
        if (self.bursting or self.flushing) and self.burst_q and len(self.asks["write"]) < 2:
            self.asks["write"].append((self.burst_q.popleft(), True, None))
        for u in self.USERS:
            if u == "write" and (self.writes_from is None or self.now < self.writes_from):
                continue                # (writes wait for the verdict)
            if self.asks[u]:
                if self.dram.offer(*self.asks[u][0]):
                    _, write, key = self.asks[u].popleft()
                    self.writes_taken += u == "write"
                    if write and key is not None:       # (a write's tag counts once the port takes it)
                        self.arrived[key] = self.arrived.get(key, 0) + 1
                break
        for tag in self.dram.clock():
            self.arrived[tag] = self.arrived.get(tag, 0) + 1
        if self.verdict is not None and self.has("check", self.verdict[0], scoped=False):
            self.writes_from, self.verdict = max(self.now + 1, self.verdict[1]), None

    def has(self, tag, beats, scoped=True):
        return self.arrived.get((self.unit, tag) if scoped else tag, 0) >= beats

    def drained(self):
        return not any(self.asks.values()) and not self.burst_q and self.dram.idle()


def _beats_of(arr_base, itemsize, first, last):
    return list(range(arr_base + first * itemsize // 64, arr_base + (last * itemsize + 63) // 64))


class _Job:
    def __init__(self, batch, lay, params, times, adagrad=False, hot_beats=None):
        self.b, self.lay, self.t, self.adagrad = batch, lay, times, adagrad
        self.port = _Port(params, hot_beats)
        self.rb = lay.row_beats
        self.T, self.B = batch.num_tables, batch.batch_size
        self.isize = batch.given("indices").dtype.itemsize
        self.osize = batch.given("offsets").dtype.itemsize
        self.phases, self._marked = {}, 0

    def mark(self, phase):
        """The cycles since the last mark count as ``phase`` (the RTL's counters' split)."""
        self.phases[phase] = self.phases.get(phase, 0) + self.port.now - self._marked
        self._marked = self.port.now

    def wait(self, cycles=1):
        for _ in range(cycles):
            self.port.tick()

    def step(self, results, part, cycles=1, each=None):
        """``cycles`` clocks, in each of which ``each()`` runs and the results due are written
        (a pooled row each)."""
        for _ in range(cycles):
            if each is not None:
                each()
            if results is not None:
                for bag in results.pop(self.port.now):      # (a full queue holds the result back)
                    if not self.port.batch(self.staging(self.lay.pooled, part.bag_lo + bag, part.table)):
                        results.due(self.port.now + 1, bag)
            self.port.tick()

    def row(self, t, r):
        return row_beats(self.lay, t, r)

    def staging(self, base, b, t):
        return staging_row_beats(self.lay, base, b, t, self.T)

    def finish(self, results, part, fold=None):
        """PART_FINISH: the fold's last operations and results, the burst queue flushed, every
        write taken."""
        p = self.port
        p.flushing = True
        while (fold is not None and not fold.idle()) or p.now <= results.last():
            self.step(results, part, each=fold.step if fold is not None else None)
        while not p.drained():
            self.wait()
        p.flushing = False
        self.mark("drain")

    def check(self, shared_end):
        """The batch checker (hw/engine/batch_checker.py) beside the first part: its own read
        of the offsets, the first part's indices shared at the analysis's pace (they end at
        ``shared_end``), the rest read and checked 8 a cycle; the verdict, once its last beat
        is in and checked, opens the write gate."""
        b, p = self.b, self.port
        n, per = len(b.indices), 64 // self.isize
        beats = _beats_of(self.lay.offsets, self.osize, 0, len(b.offsets)) + \
            [self.lay.indices + k for k in range(shared_end // per, (n + per - 1) // per)]
        p.ask("input", beats, "check", scoped=False)
        p.check_started = True
        checked = max(p.now, len(b.offsets)) + -(-(n - shared_end) // CHECKED_PER_CYCLE) + self.t.check_latency
        p.verdict = (len(beats), checked)

    def offsets(self, first, count):
        """PART_OFFSETS: ``count`` offsets from ``first``, one a cycle as their beats arrive."""
        p = self.port
        self.wait(self.t.part_start)
        beats = _beats_of(self.lay.offsets, self.osize, first, first + count)
        for k in beats:
            p.ask("input", [k], ("off", k))
        for i in range(first, first + count):
            while not p.has(("off", self.lay.offsets + i * self.osize // 64), 1):
                self.wait()
            self.wait()

    def lookups(self, lo, hi, on_lookup, skip=None, tick=None):
        """The lookups [lo, hi) into the analyzer, a cycle each as their index beats (and
        weight beats, for a weighted batch) arrive, read ``index_beats_ahead`` ahead
        (``skip(k)``: lookup k passes without entering, with the run it begins:
        ``skip.run_end(k)``); ``on_lookup(k)`` for each that enters; ``tick()`` runs a
        clock (default: :meth:`wait`)."""
        p = self.port
        arrays = [(self.lay.indices, 64 // self.isize, "idx")]
        if self.b.weighted:
            arrays.append((self.lay.weights, 16, "wts"))
        asked = [lo // per for _, per, _ in arrays]
        k = lo
        while k < hi:
            for i, (base, per, tag) in enumerate(arrays):
                while asked[i] <= (hi - 1) // per and asked[i] - k // per < self.t.index_beats_ahead:
                    p.ask("input", [base + asked[i]], (tag, asked[i]))
                    asked[i] += 1
            if all(p.has((tag, k // per), 1) for _, per, tag in arrays):
                if skip is not None and skip(k):
                    k = skip.run_end(k)
                else:
                    on_lookup(k)
                    k += 1
            (tick or self.wait)()


def _walk_passes(n_low_max, n_high_max, radix_bits):
    """The sorter's walk passes: the low digits beyond the first that may vary, and the high
    ones (the first always)."""
    low = max(1, -(-max(int(n_low_max), 1).bit_length() // radix_bits))
    high = max(1, -(-max(int(n_high_max), 1).bit_length() // radix_bits))
    return (low - 1) + high


def _or_of(rows):
    """The OR of the rows (the sorter's bound on the low key, as the analyzer gives it)."""
    return int(np.bitwise_or.reduce(rows.astype(np.int64))) if len(rows) else 0


class _Fold:
    """The fold datapath (hw/engine/datapath.py).  Operations ``PS[dst] = fma(c, row,
    PS[src])`` (``src`` None: +0) and finals (``dst`` None: read ``PS[src]`` for the writer)
    come from the scheduler in program order, each of an *item* (the row it folds; a final
    of none), and enter an issue window of ``window`` a cycle at most, an item's first once
    the ring of ``window + 2`` row slots has the item's slot free (its earlier item's
    operations all issued, a later item begun).  Rows load into the ring in item order, a
    cycle each, once they have arrived (``tag``).  Each cycle the oldest waiting operation
    that depends on no older waiting one (read after write, write after read, write after
    write on a partial sum; finals in order), whose row is loaded, that was taken two cycles
    ago or more and whose ``src`` is no longer being written (``raw_wait`` cycles after the
    operation that writes it issued) issues: an operation (a final) a cycle (D / lanes = 1
    beat); a final's result leaves the cycle after."""

    QUEUE = 1                   # the scheduler's operation register

    def __init__(self, port, times, row_beats):
        self.port, self.window, self.raw_wait, self.rb = port, times.fold_window, times.fold_latency, row_beats
        self.slots = times.fold_window + 2
        self.queue = deque()            # from the scheduler: (dst, src, item, on_done)
        self.win = []                   # the window: (taken at, dst, src, item, on_done)
        self.free = {}                  # partial sum -> clock from which it may be read
        self.waiting = {}               # item -> its operations not yet issued
        self.tags = {}                  # item -> the tag of its row's arrival
        self.begun, self.loaded, self.released = -1, -1, -1    # items: latest entered, loaded, whose slot is free
        self.last_done = 0
        self.last_issue = {}            # item -> the clock its latest operation issued
        self.release_delay = times.slot_release

    def add(self, dst, src, item=None, tag=None, on_done=None):
        self.queue.append((dst, src, item, on_done))
        if item is not None:
            self.waiting[item] = self.waiting.get(item, 0) + 1
            self.tags.setdefault(item, tag)

    def full(self):
        return len(self.queue) >= self.QUEUE

    def step(self):
        now = self.port.now
        self._issue(now)
        # release: the oldest slot whose item has no operation left, a later item begun
        while self.released < min(self.loaded, self.begun - 1) and not self.waiting.get(self.released + 1) \
                and self.last_issue.get(self.released + 1, now) + self.release_delay <= now:
            self.released += 1
        # the next item's row into its slot, once the slot is free and the row is in
        nxt = self.loaded + 1
        if nxt - self.slots <= self.released and nxt in self.tags and \
                (self.tags[nxt] is None or self.port.has(self.tags[nxt], self.rb)):
            self.loaded = nxt
        # an operation from the scheduler into the window
        if self.queue and len(self.win) < self.window:
            dst, src, item, on_done = self.queue[0]
            first = item is not None and item > self.begun
            if not first or item - self.slots <= self.released:
                self.queue.popleft()
                self.begun = max(self.begun, item if item is not None else -1)
                self.win.append((now, dst, src, item, on_done))

    def _issue(self, now):
        written, read, final_waits = set(), set(), False
        for i, (taken, dst, src, item, on_done) in enumerate(self.win):
            final = dst is None
            ok = (now >= taken + 2 and (final or item <= self.loaded)
                  and src not in written and self.free.get(src, 0) <= now
                  and (final or (dst not in read and dst not in written)) and not (final and final_waits))
            if ok:
                del self.win[i]
                if final:
                    self.last_done = max(self.last_done, now + 1)
                    if on_done is not None:
                        on_done(now + 1)
                else:
                    self.free[dst] = now + self.raw_wait
                    self.waiting[item] -= 1
                    self.last_issue[item] = now
                    self.last_done = max(self.last_done, now + self.raw_wait)
                return
            read.add(src)
            if final:
                final_waits = True
            else:
                written.add(dst)

    def idle(self):
        return not self.queue and not self.win and self.port.now >= self.last_done


class _Completions:
    """Results due at a later clock: ``due(clock, item)``, and each clock ``pop()`` gives those
    due by now."""

    def __init__(self):
        self.at = {}

    def due(self, clock, item):
        self.at.setdefault(clock, []).append(item)

    def pop(self, now):
        due = [k for k in self.at if k <= now]
        return [item for k in sorted(due) for item in self.at.pop(k)]

    def last(self):
        return max(self.at, default=-1)


class _Members(NamedTuple):
    """A forward part's members in the scheduler's order, rows in row order and bags
    ascending in a row: ``bag``, ``rank`` (the row's place in the row order), ``mult`` (the
    pair's lookups: ``dedup``'s operations), and for ``refree`` each member's trie ``node``,
    its ``parent`` (0: the root, +0) and the bits of its coefficient ``c``."""
    bag: np.ndarray
    rank: np.ndarray
    mult: np.ndarray
    node: list
    parent: list
    c: list


def _members(plan, share):
    pair, mult = np.unique(plan.occ_bag.astype(np.int64) * (1 << 32) + plan.occ_stream_pos, return_counts=True)
    order = np.argsort(pair & 0xFFFFFFFF, kind="stable")
    bag, rank = (pair >> 32)[order], (pair & 0xFFFFFFFF)[order]
    node, parent, c = [], [], []
    if share:       # each bag's path in the trie of its keys, root to leaf, a key a row
        trie, at = plan.fwd_trie, {}
        cbits = plan.fkey_c.view(np.uint32)
        for b_ in range(plan.num_bags):
            n = int(trie.owner_node[b_])
            while n > 0:
                key = int(trie.node_key[n])
                at[b_, int(plan.fkey_row[key])] = (n, int(trie.node_parent[n]), int(cbits[key]))
                n = int(trie.node_parent[n])
        node, parent, c = zip(*(at[k] for k in zip(bag.tolist(), rank.tolist()))) if len(bag) else ([], [], [])
    return _Members(bag, rank, mult[order], list(node), list(parent), list(c))


def _stream_members(plan, share, fold, t, clock, row_tag, on_final):
    """A forward part's members (:func:`_members`) through the sharing scheduler, item (row)
    by item, their operations into ``fold`` (the scheduler's pipeline waits while its
    operation has no room): ``dedup``, the pair's multiplicity of operations on the bag's
    own sum, a cycle each; ``refree``, a member a cycle and an operation per trie node, from
    its parent's class (:class:`_Classes`); a member whose class was split in the sweep with
    another coefficient is deferred to a round of its item's deferred members
    (``round_start``, then two cycles a member).  After a bag's last member, its final
    (reads the partial sum holding its result): ``on_final(clock it is done, bag)``; bags
    without members last, as the scheduler scans every member (``final_scan`` cycles each).
    ``clock(n)`` runs n clocks; ``row_tag(r)`` is the tag of row r's arrival."""
    members = _members(plan, share)
    last = np.full(plan.num_bags, -1)
    np.maximum.at(last, members.bag, np.arange(len(members.bag)))
    made = set()                # dedup: the bags with an operation
    classes = _Classes(plan.num_bags)

    def final(bag, acc):
        _wait_room(fold, clock)
        fold.add(None, acc, on_done=lambda at: on_final(at, bag))

    ranks = members.rank.tolist()
    bounds = np.flatnonzero(np.diff(members.rank, prepend=-1, append=-1)).tolist()
    for lo, hi in zip(bounds, bounds[1:]):        # an item: its members lo .. hi-1
        rank = ranks[lo]
        tag = row_tag(int(plan.rows[rank]))
        if not share:
            for i in range(lo, hi):
                bag = int(members.bag[i])
                for k in range(members.mult[i]):
                    _wait_room(fold, clock)
                    fold.add(bag, bag if k or bag in made else None, rank, tag)
                    made.add(bag)
                    clock(1)
                if last[bag] == i:
                    final(bag, bag)
            continue
        # refree: a sweep a cycle a member, then rounds of the deferred ones (members whose
        # class was split in the sweep with another coefficient), each ``round_start`` and
        # two cycles a member
        todo, cost = list(range(lo, hi)), 1
        while todo:
            split, deferred = {}, []
            for i in todo:
                bag, node, parent, c = int(members.bag[i]), members.node[i], members.parent[i], members.c[i]
                if split.setdefault(parent, c) != c:
                    deferred.append(i)
                else:
                    if node not in classes.of:      # (a member with an operation waits for its room)
                        _wait_room(fold, clock)
                        fold.add(classes.new(node, fold.port.now), classes.of.get(parent), rank, tag)
                    classes.move(parent, node, fold.port.now)
                    if last[bag] == i:
                        final(bag, classes.of[node])
                clock(cost)
            todo, cost = deferred, 2
            if todo:
                clock(t.round_start)
    # bags without members (+0): the scheduler reads every member's class, two cycles each,
    # and sends their finals (hw/engine/scheduler.py FINAL_SEND)
    if (last < 0).any():
        for bag in range(plan.num_bags):
            if last[bag] < 0:
                _wait_room(fold, clock)
                fold.add(None, None, on_done=lambda at, bag=bag: on_final(at, bag))
            clock(t.final_scan)


class _Classes:
    """``refree``'s classes (hw/engine/scheduler.py): each trie node's partial sum, numbered
    from a free list (a FIFO; a class is readable there two cycles after it is put) when
    its last member leaves, else fresh; the root is +0 and never a class."""

    def __init__(self, members):
        self.of = {}                    # trie node -> its class
        self.count = {0: members}       # trie node -> members in it
        self.free = deque()             # (clock it is readable from, class)
        self.fresh = 0

    def new(self, node, now):
        if self.free and self.free[0][0] <= now:
            self.of[node] = self.free.popleft()[1]
        else:
            self.of[node], self.fresh = self.fresh, self.fresh + 1
        return self.of[node]

    def move(self, parent, node, now):
        self.count[parent] -= 1
        self.count[node] = self.count.get(node, 0) + 1
        if self.count[parent] == 0 and parent:
            self.free.append((now + 2, self.of[parent]))


def _wait_room(fold, clock):
    while fold.full():
        clock(1)


class _RowsThere:
    """A clock for the fold alone: every row is there."""
    now = 0

    def has(self, tag, beats):
        return True


def fold_alone_cycles(plan, share, times=EngineTimes()):
    """The model's fold alone on a forward part's plan (the scheduler and the datapath, rows
    always there, results always taken), the counterpart of the RTL's
    :func:`refree.verif.fold_harness.fold_cycles` (``since_first_member``): cycles from the
    first member to the last result."""
    clock_, done = _RowsThere(), [0]
    fold = _Fold(clock_, times, 1)

    def clock(n):
        for _ in range(n):
            fold.step()
            clock_.now += 1
    _stream_members(plan, share, fold, times, clock, lambda r: None,
                    lambda at, bag: done.append(at))
    while not fold.idle():
        clock(1)
    return max(done)


def _forward_sharing(job, part, share):
    """``dedup`` and ``refree`` forward: per part, offsets, lookups (each distinct row fetched
    at its first), the analyzer's tail and sort, then the members through the scheduler and
    the fold (:func:`_stream_members`), each bag's pooled row written once its final has
    left the fold."""
    b, p, t = job.b, job.port, job.t
    plan = plan_part(b, part, "sum")
    job.offsets(part.table * job.B + part.bag_lo, part.bag_hi - part.bag_lo + 1)
    seen = set()

    def on_lookup(k):
        r = int(b.indices[k])
        if r not in seen:
            seen.add(r)
            p.ask("row", job.row(part.table, r), ("row", part.table, r))
    job.lookups(part.lo, part.hi, on_lookup)
    if not p.check_started:
        job.check(part.hi)
    job.wait(t.analyzer_tail)
    job.mark("analysis")
    n = len(plan.rows)
    job.wait(_walk_passes(_or_of(plan.rows), part.bag_hi - part.bag_lo, t.radix_bits) * (n + 3))
    while p.writes_from is None or p.now < p.writes_from:   # (the first part streams once the batch is good)
        job.wait()
    results = _Completions()
    fold = _Fold(p, t, job.rb)
    _stream_members(plan, share, fold, t, lambda n: job.step(results, part, n, each=fold.step),
                    lambda r: ("row", part.table, r),
                    lambda at, bag: results.due(at + t.result_latency, bag))
    job.mark("stream")
    job.finish(results, part, fold)


def _forward_baseline(job, part):
    """``baseline`` forward: per part, offsets, then the lookups into the analyzer beside the
    stream: each lookup, once its bag is whole in the lookup buffer, in the buffer's order
    (16 bags interleaved), its row read (``row_reads_ahead`` beats in flight) and folded a
    cycle each; each bag's pooled row written once its last lookup has passed the fold."""
    b, p, t = job.b, job.port, job.t
    offs = np.asarray(b.offsets[part.table * job.B + part.bag_lo: part.table * job.B + part.bag_hi + 1], np.int64)
    job.offsets(part.table * job.B + part.bag_lo, len(offs))
    order = deque(buffer_order(part.lo, part.hi, offs))
    bag_of = np.repeat(np.arange(part.bag_hi - part.bag_lo), np.diff(offs))
    lastk = set((offs[1:] - 1)[np.diff(offs) > 0].tolist())
    analysed = [part.lo]            # lookups in the analyzer so far
    asked = deque()
    results = _Completions()

    def stream():
        # ask the rows of lookups whose bags are whole, fold those that have arrived
        while order and len(asked) * job.rb < t.row_reads_ahead:
            k = order[0]
            if offs[bag_of[k - part.lo] + 1] > analysed[0]:
                break
            order.popleft()
            p.ask("row", job.row(part.table, b.indices[k]), ("brow", k))
            asked.append(k)
        if asked and p.has(("brow", asked[0]), job.rb):
            k = asked.popleft()
            if k in lastk:
                results.due(p.now + t.fold_latency, int(bag_of[k - part.lo]))

    def on_lookup(k):
        analysed[0] = k + 1
    job.lookups(part.lo, part.hi, on_lookup, tick=lambda: job.step(results, part, each=stream))
    if not p.check_started:
        job.check(part.hi)
    job.mark("analysis")
    while order or asked:
        job.step(results, part, each=stream)
    for bag in np.flatnonzero(np.diff(offs) == 0):      # (empty bags: +0, after the last operation)
        results.due(p.now + t.result_latency, int(bag))
    job.mark("stream")
    job.finish(results, part)


def _backward_baseline(job, part):
    """``baseline`` backward: per part, offsets, then per lookup in index order (once its bag
    is whole in the buffer) its gradient row and table row read, ``D / 16`` cycles on the
    updater once both are in, and the row written; ``rows_in_flight`` lookups at most from
    the reads to the write taken (the forwarder's slots, which also hold the writes back
    until the batch check's verdict)."""
    b, p, t = job.b, job.port, job.t
    offs = np.asarray(b.offsets[part.table * job.B + part.bag_lo: part.table * job.B + part.bag_hi + 1], np.int64)
    job.offsets(part.table * job.B + part.bag_lo, len(offs))
    bag_of = np.repeat(np.arange(part.bag_hi - part.bag_lo), np.diff(offs))
    state = {"next": part.lo, "analysed": part.lo, "busy_until": 0}
    asked = deque()
    written0 = p.writes_taken          # (the previous part drained)
    latest, source, entered = {}, {}, {}     # row -> its latest lookup; lookup -> the one it takes its row from

    def in_flight():
        return state["next"] - part.lo - (p.writes_taken - written0) // job.rb

    def stream():
        while state["next"] < part.hi and in_flight() < t.rows_in_flight:
            k = state["next"]
            if offs[bag_of[k - part.lo] + 1] > state["analysed"]:
                break
            p.ask("grad", job.staging(job.lay.grad, part.bag_lo + bag_of[k - part.lo], part.table), ("g", k))
            p.ask("row", job.row(part.table, b.indices[k]), ("brow", k))
            r = int(b.indices[k])
            if r in latest and not p.has(("w", latest[r]), job.rb):
                source[k] = latest[r]           # (forwarded: the update in flight's result)
            latest[r] = k
            asked.append(k)
            state["next"] += 1
        if asked and p.now >= state["busy_until"] and p.has(("g", asked[0]), job.rb) \
                and p.has(("brow", asked[0]), job.rb) \
                and (asked[0] not in source or p.now >= entered[source[asked[0]]] + t.forward_latency + job.rb):
            k = asked.popleft()
            entered[k] = p.now
            state["busy_until"] = p.now + job.rb        # the updater: a beat a cycle
            # (its write asked as it enters the updater: the RTL's writer takes it the
            # updater's latency later, which the model leaves out; measured, that latency
            # moves the jobs by -4 % to +5 % either way, no better on the whole)
            p.ask("write", job.row(part.table, b.indices[k]), ("w", k))

    def on_lookup(k):
        state["analysed"] = k + 1
    job.lookups(part.lo, part.hi, on_lookup, tick=lambda: job.step(None, part, each=stream))
    if not p.check_started:
        job.check(part.hi)
    job.mark("analysis")
    while state["next"] < part.hi or asked:
        job.step(None, part, each=stream)
    job.mark("stream")
    while not p.drained():
        job.wait()
    job.mark("drain")


class _TableRows:
    """Backward by rows, one table with ``G`` row groups: which group each lookup is in, and
    its passes' chunks (bags formed as parts are, on the bag and lookup limits)."""

    def __init__(self, b, tab, G, limits):
        B = b.batch_size
        self.tab, self.G = tab, G
        self.lo, self.hi = int(b.offsets[tab * B]), int(b.offsets[(tab + 1) * B])
        offs = np.asarray(b.offsets[tab * B:(tab + 1) * B + 1], np.int64)
        self.bag_of = np.repeat(np.arange(B), np.diff(offs))
        self.chunks, first = [], 0
        for bag in range(B):
            if bag - first == limits.max_bags or offs[bag + 1] - offs[first] > limits.max_lookups:
                self.chunks.append((first, bag))
                first = bag
        self.chunks.append((first, B))
        idx = np.asarray(b.indices[self.lo:self.hi])
        self.member = row_group_of(idx, G) if G > 1 else np.zeros(len(idx), np.int64)


def _backward_pass(job, rows, g, dry, share):
    """``dedup`` and ``refree`` backward, one pass of row group ``g`` (a dry one only
    analyses): offsets, the group's lookups (others passed over a run at a time), each bag's
    gradient row and each distinct row fetched at its first lookup of the group, each bag's
    pairs merged once its last lookup is in (on the row's accumulator, in the fold: ``dedup``
    an operation per lookup, ``refree`` (``share``) one per pair, its coefficient the
    multiplicity); the pass in chunks of bags formed as parts are, each reading its offsets;
    then each row's update (``D / 16`` cycles on the updater once its row is in), its write
    batched, or row-wise Adagrad's (:func:`_adagrad_updates`)."""
    b, p, t = job.b, job.port, job.t
    tab, lo, hi, bag_of = rows.tab, rows.lo, rows.hi, rows.bag_of
    rows_seen, bags_seen = {}, set()
    skip = _OutOfGroup(rows.member, g, lo, bag_of, 64 // job.isize)
    fold = _Fold(p, t, job.rb)
    bag_pairs = {}              # the bags being analysed: their rows, in index order
    items = []                  # the bags merged so far

    def close_bags(upto):
        # a bag's pairs go to the merge once the analyzer has its last lookup (its gradient
        # row the datapath's item)
        for bag in [x for x in bag_pairs if x < upto]:
            for r, mult in Counter(bag_pairs.pop(bag)).items():
                for _ in range(1 if share else mult):   # (dedup: an operation per lookup, refree one per pair)
                    fold.add(r, r, len(items), ("g", tab, bag))
            items.append(bag)

    def on_lookup(k):
        if dry:
            return
        bag, r = int(bag_of[k - lo]), int(b.indices[k])
        close_bags(bag)
        if bag not in bags_seen:
            bags_seen.add(bag)
            p.ask("grad", job.staging(job.lay.grad, bag, tab), ("g", tab, bag))
        if r not in rows_seen:
            rows_seen[r] = len(rows_seen)
            p.ask("row", job.row(tab, r), ("row", tab, r))
        bag_pairs.setdefault(bag, []).append(r)
    if dry and not p.check_started:     # (beside dry passes the check reads every index itself)
        job.check(0)
    for bag_lo, bag_hi in rows.chunks:
        job.offsets(tab * job.B + bag_lo, bag_hi - bag_lo + 1)
        c_lo, c_hi = int(b.offsets[tab * job.B + bag_lo]), int(b.offsets[tab * job.B + bag_hi])
        job.lookups(c_lo, c_hi, on_lookup, skip=skip, tick=lambda: job.step(None, None, each=fold.step))
        if not p.check_started:
            job.check(c_hi)
    close_bags(job.B)
    job.wait(t.analyzer_tail)
    job.mark("analysis")
    if dry:
        return
    # the merge's tail, then each row's final and update in slot order
    while not fold.idle():
        job.step(None, None, each=fold.step)
    if job.adagrad:
        _adagrad_updates(job, tab, list(rows_seen))     # (it marks the stream's end)
    else:
        job.mark("stream")
        for r in rows_seen:
            while not p.has(("row", tab, r), job.rb):
                job.wait()
            job.wait(job.rb)                    # the updater: a beat a cycle
            while not p.batch(job.row(tab, r)):     # (the write queue full: the updater waits)
                job.wait()
    p.flushing = True
    while not p.drained():
        job.wait()
    p.flushing = False
    job.mark("drain")


class _Adagrad:
    """The row-wise Adagrad unit (hw/engine/adagrad.py) on its ``P`` FMA lanes, an issue a
    cycle, the updates first: a row in the ring (its row, merged gradient and state beat
    in) waits for a group (up to ``group`` rows waiting); a group's squares take ``D / 8``
    steps of ``8 / min(P, 8)`` issues a row, each step at least ``ROUND_TRIP`` + the FMA's
    latency; its rows' scalars leave ``scalar_latency`` after the group, a row a cycle; each
    row's update ``D / P`` issues; out, ``D / 16`` row beats and the state beat, the FMA's
    latency after its last issue (``on_out(row)``)."""

    def __init__(self, times, dim, on_out):
        self.t, self.dim, self.on_out = times, dim, on_out
        self.P = times.adagrad_lanes
        self.ring = deque()             # rows in the ring, in order: [row, ready]
        self.group = []                 # the group whose squares run: its rows
        self.steps_left = self.issues_left = 0
        self.step_from = 0              # the clock the next step may begin
        self.updates = deque()          # (clock its scalars are out, row)
        self.updating = None            # [row, issues left]
        self.out = []                   # (clock, row) rows leaving
        self.in_unit = 0

    def add(self, row, ready):
        self.ring.append([row, ready])
        self.in_unit += 1

    def step(self, now):
        for due, row in [x for x in self.out if x[0] <= now]:
            self.out.remove((due, row))
            self.in_unit -= 1
            self.on_out(row)
        if self.updating is None and self.updates and self.updates[0][0] <= now:
            self.updating = [self.updates.popleft()[1], self.dim // self.P]
        if self.updating is not None:           # (an update's issue has the lanes)
            self.updating[1] -= 1
            if not self.updating[1]:
                self.out.append((now + self.t.adagrad_out_latency, self.updating[0]))
                self.updating = None
            return
        if not self.group:
            ready = list(itertools.takewhile(lambda x: x[1](), itertools.islice(self.ring, self.t.adagrad_group)))
            if not ready:
                return
            self.group = ready
            for x in ready:
                self.ring.remove(x)
            self.steps_left, self.issues_left = self.dim // 8, 0
        if not self.issues_left:
            if now < self.step_from:
                return
            if not self.steps_left:         # the group's squares done: its scalars
                for k, (row, _) in enumerate(self.group):
                    self.updates.append((now + self.t.adagrad_scalar_latency + k, row))
                self.group = []
                return
            self.steps_left -= 1
            self.issues_left = len(self.group) * 8 // min(self.P, 8)
            self.step_from = now + self.t.adagrad_step
        self.issues_left -= 1

    def idle(self):
        return not self.in_unit


def _adagrad_updates(job, tab, rows):
    """Row-wise Adagrad's updates of a pass, in slot order: each takes a lock on its state
    beat (``rows_in_flight`` at most; a beat locked by an update before the previous one
    waits for its write, the previous one's is carried on: ``chained``), reads the beat
    (after every other user of the port), and goes through :class:`_Adagrad` once its row
    and beat are in; out, the row's beats and its state beat written (not batched)."""
    p, t = job.port, job.t
    locks = deque()
    state = lambda r: job.lay.states[tab] + r // 16

    def out(r):
        p.ask("write", job.row(tab, r))
        p.ask("write", [state(r)], ("sw", tab, r))      # (its lock goes once this write is taken)
    unit = _Adagrad(t, job.rb * 16, out)

    def tick():
        job.step(None, None, each=lambda: unit.step(p.now))
        while locks and p.has(("sw", tab, locks[0][1]), 1):
            locks.popleft()
    prev = None
    for r in rows:
        s = state(r)
        while len(locks) >= t.rows_in_flight or (s != prev and any(x == s for x, _ in locks)) or \
                len(p.asks["state"]) >= t.state_reads_ahead:
            tick()
        locks.append((s, r))
        p.ask("state", [s], ("st", tab, r))
        unit.add(r, lambda r=r: p.has(("row", tab, r), job.rb) and p.has(("st", tab, r), 1))
        prev = s
        tick()
    job.mark("stream")
    while not unit.idle() or locks:
        tick()


class _OutOfGroup:
    """Backward by rows: a lookup of another row group passes, with the run of such lookups
    after it up to the end of its index beat and of its bag, in one cycle."""

    def __init__(self, member, g, lo, bag_of, per_beat):
        self.member, self.g, self.lo, self.bag_of, self.per = member, g, lo, bag_of, per_beat

    def __call__(self, k):
        return self.member[k - self.lo] != self.g

    def run_end(self, k):
        i = k - self.lo
        end_beat = (k // self.per + 1) * self.per - self.lo
        bag = self.bag_of[i]
        j = i + 1
        while j < len(self.member) and j < end_beat and self.bag_of[j] == bag and self.member[j] != self.g:
            j += 1
        return j + self.lo


def _units(batch, mode, job_name, limits):
    """The job's units in order, each ``(kind, lookups it walks, run(job))``: its parts, or
    (backward by rows) its row groups' passes, dry or not (:func:`.traffic.backward_passes`)."""
    if mode == "baseline" or job_name == "forward":
        run = (_forward_baseline if mode == "baseline" else
               lambda job, part: _forward_sharing(job, part, share=mode == "refree")) if job_name == "forward" \
            else _backward_baseline
        return [("part", part.hi - part.lo, lambda job, part=part: run(job, part)) for part in partition(batch, limits)]
    tables = {}
    units = []
    for t, G, g, dry in backward_passes(batch, limits):
        if t not in tables:
            tables[t] = _TableRows(batch, t, G, limits)
        rows = tables[t]
        units.append(("dry pass" if dry else "pass", rows.hi - rows.lo,
                      lambda job, g=g, dry=dry, rows=rows: _backward_pass(job, rows, g, dry, mode == "refree")))
    return units


class ModelRun(NamedTuple):
    """A job by the model: its ``cycles``, their split by phase (the RTL counters' names),
    whether only a sample of its parts ran (``sampled``), and the ranks' DRAM commands
    (``reads``, ``writes``, ``activates``, ``refreshes``, summed over the ranks; scaled
    with the cycles when sampled)."""
    cycles: int
    phases: dict
    sampled: bool
    commands: dict


def _commands(job):
    st = job.port.dram.stats
    hot = {"hot_hits": job.port.dram.hits} if isinstance(job.port.dram, HotStoreModel) else {}
    return {"reads": sum(s["reads"] for s in st), "writes": sum(s["writes"] for s in st),
            "activates": sum(s["acts"] for s in st), "refreshes": sum(s["refs"] for s in st), **hot}


def job_cycles(batch, lay, mode, job_name, limits, params, times=EngineTimes(), max_lookups=None,
               optimizer="sgd", hot_beats=None):
    """Model one job (see the module docstring): a :class:`ModelRun`.  ``lay``: the memory
    layout (:func:`refree.verif.staging.layout`; its rows' beats give D), ``limits`` the
    engine's part limits, ``params`` the :class:`~refree.hw.ddr4.params.DramParams`.

    Every part (pass) runs in turn on one DRAM side; with ``max_lookups``, a job whose parts
    walk more lookups runs only every k-th part of each kind (parts; backward by rows, dry
    passes and passes), one after another on one DRAM side (its refresh goes on), and each
    kind's cycles and commands are scaled by the lookups it walks: an estimate for batches
    too large to run whole (``sampled``).  A sampled job leaves out the batch check (its
    second read of the input, beside the parts: under 1 % of such a job's beats) and its
    verdict's wait.

    ``optimizer``: ``"sgd"`` or ``"rowwise-adagrad"`` (``dedup`` and ``refree``; ``lay`` with
    the state arrays: ``layout(..., with_state=True)``).  ``hot_beats``: the beats a hot-row
    store holds (hw/lrdimm/hot_row_store.py), served on chip; ``commands["hot_hits"]``."""
    adagrad = {"sgd": False, "rowwise-adagrad": True}[optimizer]
    if adagrad and mode == "baseline":
        raise ValueError("row-wise Adagrad runs the dedup and refree modes (baseline has none)")
    units = _units(batch, mode, job_name, limits)
    total = sum(n for _, n, _ in units)
    job = _Job(batch, lay, params, times, adagrad=adagrad and job_name == "backward", hot_beats=hot_beats)
    if max_lookups is None or total <= max_lookups:
        for k, (_, _, run) in enumerate(units):
            job.port.unit = k
            run(job)
        return ModelRun(job.port.now, job.phases, False, _commands(job))
    # every step-th unit of each kind, from the middle of the first stride (at least one of
    # each kind), each kind scaled by the lookups it walks over those its sample walked
    job.port.writes_from, job.port.check_started = 0, True     # (no batch check: see above)
    step = -(-total // max_lookups)
    cycles, phases, commands = 0.0, {}, {}
    for kind in dict.fromkeys(k for k, _, _ in units):
        same = [(n, run) for k, n, run in units if k == kind]
        chosen = same[step // 2::step] or [same[len(same) // 2]]
        scale = sum(n for n, _ in same) / max(1, sum(n for n, _ in chosen))
        for n, run in chosen:
            job.port.unit += 1
            start, before, counted = job.port.now, dict(job.phases), _commands(job)
            run(job)
            cycles += (job.port.now - start) * scale
            for name, v in job.phases.items():
                phases[name] = phases.get(name, 0) + (v - before.get(name, 0)) * scale
            for name, v in _commands(job).items():
                commands[name] = commands.get(name, 0) + (v - counted[name]) * scale
    return ModelRun(round(cycles), {k: round(v) for k, v in phases.items()}, True,
                    {k: round(v) for k, v in commands.items()})
