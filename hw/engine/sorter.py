"""Sorter: the analyzer's stable LSD radix sort of a part's slots, by bucket lists.

Sorts the elements ``0 .. n-1`` by a key the owner keeps in its own tables: key ``high``
descending, then key ``low`` ascending, stable (equal keys keep element order).  That is
docs/design.md section 2's row order when the elements are slots, ``high`` the bags holding
the row and ``low`` the row (the forward member lists; backward streams its bags in bag
order, unsorted).

Each half of the key is cut into digits of ``radix_bits`` (``high`` inverted, so that
ascending digits mean descending counts); one pass per digit, least significant first: the
low digits, then the high ones.  A pass appends each element, in the previous pass's order,
to the list of its digit (a head and a tail per digit, a next pointer per element): no
counts and no prefix sums.  The next pass walks the lists in digit order.  Two banks of
lists (ping-pong): one is walked while the other is built.

The first pass (low digit 0) is built while the owner creates its elements (``add``, in
element order): it costs no cycle of the sort.  After ``start``, a walk per remaining pass
whose digit may differ between elements, known from upper bounds on the two halves
(``low_max``, ``high_max``: a pass is needed when its half's bound has a bit at or above the
pass's first bit); the first high pass always runs, and drops the elements numbered ``n``
or more (added, then given up by the owner: the analyzer's rolled-back slots).  The sorted
order is then read out by walking the last lists (``order_next``).

Walk: an element a cycle, the list's next pointer read (a synchronous read) in the cycle
the element is walked; at a list's tail the walk moves to the head of the next non-empty
digit (a priority encoder over the digits' valid bits) in the same cycle.  A walk pass's
element pipeline: W walks the element and reads its key (``key_addr``, the owner's tables,
a synchronous read) -> A appends it to its digit's list.

Latency: from ``start`` to ``done`` about ``W * (n + 3)`` cycles for W walk passes
(``tests/test_engine_sorter.py`` counts them).  Throughput: an element a cycle per walk and
out.  Reset: idle; ``clear`` forgets every element (the heads' and tails' valid bits are
flip-flops, cleared in one cycle).

Members
-------
clear : In(1)           pulse when idle: forget every element (before the first ``add``)
add : In(1)             element ``add_elem`` exists, with ``add_low`` its key's low half
add_elem : In(elem_bits)    (in element order: 0, 1, 2, ...; from ``clear`` to ``start``)
add_low : In(key_low_bits)
start : In(1)           pulse when idle: sort the elements below ``n`` (``n``, ``low_max`` and
n : In(elem_bits + 1)   ``high_max`` are read then and must hold until ``done``)
low_max, high_max : In(at least 32 bits)
                        upper bounds of every element's ``low`` and ``high`` (a bound at or
                        beyond ``2**key_*_bits``: every digit of that half may vary)
key_read : Out(1)       the owner's tables are read at ``key_addr`` this cycle, and in the
key_addr : Out(elem_bits)   next cycle ``key_low`` and ``key_high`` must be that element's key
key_low : In(key_low_bits)  (a synchronous read)
key_high : In(key_high_bits)
busy : Out(1)           from ``start`` to ``done``
done : Out(1)           the last cycle of the sort; the order can be read from the next
order_next : In(1)      when not busy, after ``done``: take the next element of the order;
order : Out(elem_bits)      it is ``order`` in the next cycle (the first ``n`` takes give
                        every element once)
"""
from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .sram import rmw_memory

__all__ = ["RadixSorter", "radix_walks"]


BOUND_BITS = 32      # the key bounds' ports are at least this wide (an owner's counts)


def _digits(bits, radix_bits):
    """Digits of ``radix_bits`` in a key half of ``bits``."""
    return -(-bits // radix_bits)


def radix_walks(key_low_bits, key_high_bits, radix_bits):
    """The most walk passes of a sort: every digit's but the first low one (built as the
    elements are added)."""
    return _digits(key_low_bits, radix_bits) - 1 + _digits(key_high_bits, radix_bits)


def lowest_set_bit(m, vector, name):
    """(any, index) of ``vector``'s lowest set bit: an isolate and an OR-tree encoder."""
    lowest = Signal(len(vector), name=f"{name}_onehot")
    index = Signal(range(max(len(vector), 2)), name=f"{name}_index")
    m.d.comb += lowest.eq(vector & (~vector + 1))
    m.d.comb += [index[j].eq(Cat(*[lowest[i] for i in range(len(vector)) if (i >> j) & 1]).any())
                 for j in range(len(index)) if len(vector) > 1 << j]
    return vector.any(), index


class RadixSorter(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    capacity : int          most elements of a sort
    key_low_bits, key_high_bits : int
    radix_bits : int        digit width: a pass per digit, 2**radix_bits lists a bank
    """

    def __init__(self, capacity, key_low_bits, key_high_bits, radix_bits):
        self.capacity, self.radix_bits = capacity, radix_bits
        self.elem_bits = max(1, (capacity - 1).bit_length())
        self.key_low_bits, self.key_high_bits = key_low_bits, key_high_bits
        self.low_digits = _digits(key_low_bits, radix_bits)
        self.high_digits = _digits(key_high_bits, radix_bits)
        self.walks = radix_walks(key_low_bits, key_high_bits, radix_bits)
        E = self.elem_bits
        super().__init__({
            "clear": In(1), "add": In(1), "add_elem": In(E), "add_low": In(key_low_bits),
            # (the bounds are wider than the key's halves: an owner's bound may exceed them)
            "start": In(1), "n": In(E + 1), "low_max": In(max(key_low_bits, BOUND_BITS)),
            "high_max": In(max(key_high_bits, BOUND_BITS)),
            "key_read": Out(1), "key_addr": Out(E),
            "key_low": In(key_low_bits), "key_high": In(key_high_bits),
            "busy": Out(1), "done": Out(1),
            "order_next": In(1), "order": Out(E),
        })

    def _walk_passes(self):
        """Per walk pass: (its digit of the key's low or inverted high half, needed)."""
        r, low, high = self.radix_bits, self.key_low, ~self.key_high
        passes = []
        for k in range(1, self.low_digits):
            passes.append((low[k * r:(k + 1) * r], (self.low_max >> (k * r)) != 0))
        for k in range(self.high_digits):
            passes.append((high[k * r:(k + 1) * r], C(1, 1) if k == 0 else (self.high_max >> (k * r)) != 0))
        return passes

    def elaborate(self, platform):
        m = Module()
        E, r, W = self.elem_bits, self.radix_bits, self.walks
        D = 1 << r
        # Two banks of lists: heads and tails (read at once: asynchronous ports) and next
        # pointers (a synchronous read a walked element); the valid bits of the heads and
        # tails in flip-flops.  Bank b's words are at Cat(digit, b) and Cat(element, b).
        m.submodules.heads = heads = memory.Memory(shape=E, depth=2 * D, init=[])
        m.submodules.tails = tails = memory.Memory(shape=E, depth=2 * D, init=[])
        head_wr, tail_wr = heads.write_port(), tails.write_port()
        head_rd = heads.read_port(domain="comb")
        walk_tail_rd, build_tail_rd = tails.read_port(domain="comb"), tails.read_port(domain="comb")
        next_rd, next_wr = rmw_memory(m, "next", E, 2 << E)
        valid = [Signal(D, name=f"valid{b}") for b in range(2)]
        bank = Signal()                         # the bank being built (the other is walked)

        # ---- build: append an element to its digit's list ---------------------------------
        append, append_elem, append_digit = Signal(), Signal(E), Signal(r)
        m.d.comb += build_tail_rd.addr.eq(Cat(append_digit, bank))
        with m.If(append):
            with m.If(Mux(bank, valid[1], valid[0]).bit_select(append_digit, 1)):
                m.d.comb += [next_wr.addr.eq(Cat(build_tail_rd.data, bank)), next_wr.data.eq(append_elem),
                             next_wr.en.eq(1)]
            with m.Else():
                m.d.comb += [head_wr.addr.eq(Cat(append_digit, bank)), head_wr.data.eq(append_elem),
                             head_wr.en.eq(1)]
                for b in range(2):
                    with m.If(bank == b):
                        m.d.sync += valid[b].eq(valid[b] | (C(1, 1) << append_digit))
            m.d.comb += [tail_wr.addr.eq(Cat(append_digit, bank)), tail_wr.data.eq(append_elem), tail_wr.en.eq(1)]

        # ---- walk: the other bank's lists in digit order, an element a cycle ---------------
        walked_valid = Mux(bank, valid[0], valid[1])
        walking, from_next = Signal(), Signal()
        held, digit = Signal(E), Signal(r)
        cur = Mux(from_next, next_rd.data, held)
        above = Signal(D)
        m.d.comb += above.eq(walked_valid & ~((C(2, D + 1) << digit) - 1)[:D])
        more, next_digit = lowest_set_bit(m, above, "next_digit")
        any_valid, first_digit = lowest_set_bit(m, walked_valid, "first_digit")
        begin, step = Signal(), Signal()
        m.d.comb += [walk_tail_rd.addr.eq(Cat(digit, ~bank)), next_rd.addr.eq(Cat(cur, ~bank)),
                     head_rd.addr.eq(Cat(Mux(begin, first_digit, next_digit), ~bank))]
        with m.If(begin):
            m.d.sync += [walking.eq(any_valid), digit.eq(first_digit), held.eq(head_rd.data), from_next.eq(0)]
        with m.Elif(step & walking):
            with m.If(cur != walk_tail_rd.data):
                m.d.sync += from_next.eq(1)
            with m.Elif(more):
                m.d.sync += [digit.eq(next_digit), held.eq(head_rd.data), from_next.eq(0)]
            with m.Else():
                m.d.sync += walking.eq(0)
        with m.Elif(walking):                   # (held: the next pointer is read once)
            m.d.sync += [held.eq(cur), from_next.eq(0)]

        # ---- the passes: the first as elements are added; a walk pass reads the walked
        # element's key, then appends the element (one below n) to its digit's list
        passes = self._walk_passes()
        needed = Cat(*[need for _, need in passes])
        pass_no = Signal(range(W + 1))          # the walk pass (W: none left)
        following = Signal.like(pass_no)        # the first needed pass after it
        m.d.comb += following.eq(W)
        for k in reversed(range(1, W)):         # (no pass is before pass 0)
            with m.If(needed[k] & (pass_no < k)):
                m.d.comb += following.eq(k)
        pass_digit = Signal(r)
        with m.Switch(pass_no):
            for k, (d, _) in enumerate(passes):
                with m.Case(k):
                    m.d.comb += pass_digit.eq(d)
        a_valid, a_elem = Signal(), Signal(E)
        m.d.comb += self.key_addr.eq(cur)
        m.d.sync += [a_valid.eq(0), a_elem.eq(cur)]
        with m.If(self.add):
            m.d.comb += [append.eq(1), append_elem.eq(self.add_elem), append_digit.eq(self.add_low[:r])]
        with m.Elif(a_valid):
            m.d.comb += [append.eq(1), append_elem.eq(a_elem), append_digit.eq(pass_digit)]

        def switch_banks():
            """The bank just built is walked; the other, emptied, is built."""
            m.d.sync += [bank.eq(~bank)] + [valid[b].eq(Mux(bank == b, valid[b], 0)) for b in range(2)]

        m.d.comb += self.busy.eq(1)
        with m.FSM(name="sort"):
            with m.State("IDLE"):               # (and the order read out)
                m.d.comb += [self.busy.eq(0), step.eq(self.order_next)]
                with m.If(self.order_next):
                    m.d.sync += self.order.eq(cur)
                with m.If(self.clear):
                    m.d.sync += [bank.eq(0), valid[0].eq(0), walking.eq(0)]
                with m.If(self.start):
                    m.d.sync += pass_no.eq(0)
                    m.next = "SEEK"
            with m.State("SEEK"):               # the next needed walk pass (the first high one is)
                with m.If(pass_no == W):
                    switch_banks()
                    m.next = "ORDER"
                with m.Elif(~needed.bit_select(pass_no, 1)):
                    m.d.sync += pass_no.eq(following)
                with m.Else():
                    switch_banks()
                    m.next = "BEGIN"
            with m.State("BEGIN"):
                m.d.comb += begin.eq(1)
                m.next = "WALK"
            with m.State("WALK"):
                m.d.comb += [step.eq(1), self.key_read.eq(walking)]
                with m.If(walking):
                    m.d.sync += a_valid.eq(cur < self.n)
                with m.Elif(~a_valid):          # (the pass's last element appended)
                    m.d.sync += pass_no.eq(following)
                    m.next = "SEEK"
            with m.State("ORDER"):              # the walk of the order begins
                m.d.comb += [begin.eq(1), self.done.eq(1)]
                m.next = "IDLE"
        return m
