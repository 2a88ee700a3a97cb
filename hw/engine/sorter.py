"""Sorter: the analyzer's stable LSD radix sort of a part's slots.

Sorts the elements ``0 .. n-1`` by a key the owner keeps in its own tables: key ``high``
descending, then key ``low`` ascending, stable (equal keys keep element order).  That is
docs/design.md section 2's row order when the elements are slots, ``high`` the bags holding
the row and ``low`` the row (the forward member lists; backward streams its bags in bag
order, unsorted).

The key ``Cat(low, ~high)`` is cut into digits of ``radix_bits``, one pass per digit, least
significant first.  A pass whose digit is the same for every element is skipped, known from
upper bounds on the two halves (``low_max``, ``high_max``: a pass is needed when a bound has
a bit at or above the pass's first bit of its half); the last pass always runs, so the
permutation is always written.

Walks (a cycle per element or per digit):

1. one counting walk over the elements counts every pass's digits at once (a counter
   array per pass: SRAM words whose valid bits are flip-flops, all cleared in one cycle),
   keeping each pass's range of digits met;
2. one walk takes every pass's exclusive prefix sum: step j reads and writes digit
   ``lo + j`` of each pass (``lo`` its first digit met) while j is within that pass's
   range, so the walk is as long as the widest range of a pass that scatters;
3. each needed pass walks the elements in the previous pass's order (the first in element
   order) and scatters them into the other of two permutation banks.

Element pipeline: A reads ``perm[i]`` -> B reads the element's key (``key_addr``, the owner's
tables, a synchronous read) -> C reads ``count[digit]`` -> D counts (+1) or scatters
(``perm_out[count] = element``, ``count + 1``).

Latency: about ``(P + 1) * n`` cycles plus the widest range of digits a pass met plus a few
of fill, for P needed passes (``tests/test_engine_sorter.py`` counts them).  Throughput: an
element a cycle per walk.  Reset: idle; ``start`` forgets everything of the last sort.

Members
-------
start : In(1)           pulse when idle: sort ``n`` elements (``n``, ``low_max`` and
                        ``high_max`` are read then and must hold until ``done``)
n : In(elem_bits + 1)
low_max, high_max : In(at least 32 bits)
                        upper bounds of every element's ``low`` and ``high`` (a bound at or
                        beyond ``2**key_*_bits``: every digit of that half may vary)
key_read : Out(1)       the owner's tables are read at ``key_addr`` this cycle, and in the
key_addr : Out(elem_bits)   next cycle ``key_low`` and ``key_high`` must be that element's key
key_low : In(key_low_bits)  (a synchronous read)
key_high : In(key_high_bits)
busy : Out(1)           from ``start`` to ``done``
done : Out(1)           the last cycle of the sort (the permutation is final after it)
order_addr : In(elem_bits)  when not busy: ``order`` is, a cycle later, the element at
order : Out(elem_bits)      position ``order_addr`` of the sorted order
"""
from amaranth.hdl import Array, C, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .sram import rmw_memory

__all__ = ["RadixSorter", "radix_passes"]


BOUND_BITS = 32      # the key bounds' ports are at least this wide (an owner's counts)


def radix_passes(key_bits, radix_bits):
    """Passes of a sort of keys of ``key_bits`` in digits of ``radix_bits``."""
    return -(-key_bits // radix_bits)


class RadixSorter(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    capacity : int          most elements of a sort
    key_low_bits, key_high_bits : int
    radix_bits : int        digit width: a pass per digit, 2**radix_bits counters a pass
    """

    def __init__(self, capacity, key_low_bits, key_high_bits, radix_bits):
        self.capacity, self.radix_bits = capacity, radix_bits
        self.elem_bits = max(1, (capacity - 1).bit_length())
        self.key_low_bits, self.key_high_bits = key_low_bits, key_high_bits
        self.key_bits = key_low_bits + key_high_bits
        self.passes = radix_passes(self.key_bits, radix_bits)
        E = self.elem_bits
        super().__init__({
            # (the bounds are wider than the key's halves: an owner's bound may exceed them)
            "start": In(1), "n": In(E + 1), "low_max": In(max(key_low_bits, BOUND_BITS)),
            "high_max": In(max(key_high_bits, BOUND_BITS)),
            "key_read": Out(1), "key_addr": Out(E),
            "key_low": In(key_low_bits), "key_high": In(key_high_bits),
            "busy": Out(1), "done": Out(1),
            "order_addr": In(E), "order": Out(E),
        })

    def _needed(self):
        """Per pass: its digit may differ between elements (from the keys' bounds)."""
        r, KL = self.radix_bits, self.key_low_bits
        needed = []
        for k in range(self.passes):
            lo, hi = k * r, min(k * r + r, self.key_bits)
            low_const = (self.low_max >> lo) == 0 if lo < KL else C(1, 1)
            high_const = (self.high_max >> max(lo - KL, 0)) == 0 if hi > KL else C(1, 1)
            needed.append(~(low_const & high_const))
        return needed

    def elaborate(self, platform):
        m = Module()
        E, P, r, cap = self.elem_bits, self.passes, self.radix_bits, self.capacity
        count_bits = cap.bit_length()
        # two banks of the permutation (ping-pong) and a digit counter array per pass
        perm_rd, perm_wr = rmw_memory(m, "perm", E, 2 * cap)
        counters = [rmw_memory(m, f"count{k}", count_bits, 1 << r) for k in range(P)]
        m.d.comb += self.order.eq(perm_rd.data)

        needed = self._needed()
        pass_no = Signal(range(P + 1))

        def first_needed(after, name):
            """The first needed pass numbered above ``after`` (None: any); else the last."""
            out = Signal(range(P), name=name)
            m.d.comb += out.eq(P - 1)
            for k in reversed(range(0 if after is None else 1, P - 1)):
                with m.If(needed[k] if after is None else needed[k] & (after < k)):
                    m.d.comb += out.eq(k)
            return out
        start_pass = first_needed(None, "start_pass")
        next_pass = first_needed(pass_no, "next_pass")
        more_passes = Cat(C(0, 1), *[needed[k] & (pass_no < k) for k in range(1, P)]).any()

        # The counters: valid bits in flip-flops; each pass's range of digits met.
        cnt_valid = [Signal(1 << r, name=f"cnt_valid{k}") for k in range(P)]
        count_now, digit_lo, digit_hi = [], [], []
        for k, (rd, wr) in enumerate(counters):
            valid_q = Signal(name=f"cnt_valid_q{k}")
            m.d.sync += valid_q.eq(cnt_valid[k].bit_select(rd.addr, 1) | wr.en & (wr.addr == rd.addr))
            with m.If(wr.en):
                m.d.sync += cnt_valid[k].eq(cnt_valid[k] | (C(1, 1) << wr.addr))
            count_now.append(Mux(valid_q, rd.data, 0))
            digit_lo.append(Signal(r, name=f"digit_lo{k}"))
            digit_hi.append(Signal(r, name=f"digit_hi{k}"))
        count_at_pass = Array(count_now)[pass_no]
        # The prefix walk: as long as the widest range of a pass that scatters (the first
        # one does even when no pass is needed).
        span = [Signal(r, name=f"digit_span{k}") for k in range(P)]
        walked = [Signal(name=f"walked{k}") for k in range(P)]
        span_max = C(0, r)
        for k in range(P):
            m.d.comb += [span[k].eq(digit_hi[k] - digit_lo[k]),
                         walked[k].eq((needed[k] | (start_pass == k)) & (digit_lo[k] <= digit_hi[k]))]
            span_max = Mux(walked[k] & (span[k] > span_max), span[k], span_max)
        no_digits = ~Cat(*walked).any()         # (no element: nothing to walk)
        running = [Signal(count_bits, name=f"running{k}") for k in range(P)]    # each pass's sum
        pf_valid, pf_idx = Signal(), Signal(r)

        # The element pipeline (A: perm read, B: key read, C: counter read, D: count/scatter).
        idx = Signal(max(E, r) + 1)             # the element (or the digit) walked next
        scatter = Signal()                      # the walk scatters (else it counts)
        bank = Signal()                         # the permutation bank the pass reads
        first_pass = Signal()                   # the first pass reads element order
        sb_valid, sb_idx = Signal(), Signal(E)
        sc_valid, sc_elem = Signal(), Signal(E)
        sd_valid, sd_elem = Signal(), Signal(E)
        key = Cat(self.key_low, ~self.key_high)
        digits = [key[k * r:(k + 1) * r] for k in range(P)]
        sd_digits = [Signal(r, name=f"sd_digit{k}") for k in range(P)]
        sb_elem = Mux(first_pass, sb_idx, perm_rd.data)
        m.d.comb += [self.key_addr.eq(sb_elem),
                     perm_rd.addr.eq(Mux(bank, cap, 0) + self.order_addr)]
        with m.If(self.key_read):
            m.d.sync += [sb_valid.eq(0), sc_valid.eq(sb_valid), sc_elem.eq(sb_elem),
                         sd_valid.eq(sc_valid), sd_elem.eq(sc_elem)]
            m.d.sync += [sd.eq(d) for sd, d in zip(sd_digits, digits)]
            m.d.comb += [rd.addr.eq(d) for (rd, _), d in zip(counters, digits)]
            for k, (_, wr) in enumerate(counters):
                with m.If(sd_valid & (~scatter | (pass_no == k))):     # count every pass's digit
                    m.d.comb += [wr.addr.eq(sd_digits[k]), wr.data.eq(count_now[k] + 1), wr.en.eq(1)]
                with m.If(sd_valid & ~scatter):
                    with m.If(sd_digits[k] < digit_lo[k]):
                        m.d.sync += digit_lo[k].eq(sd_digits[k])
                    with m.If(sd_digits[k] > digit_hi[k]):
                        m.d.sync += digit_hi[k].eq(sd_digits[k])
            with m.If(sd_valid & scatter):
                m.d.comb += [perm_wr.addr.eq(Mux(bank, 0, cap) + count_at_pass),
                             perm_wr.data.eq(sd_elem), perm_wr.en.eq(1)]
        drained = ~sb_valid & ~sc_valid & ~sd_valid

        m.d.comb += self.busy.eq(1)
        with m.FSM(name="sort"):
            with m.State("IDLE"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    m.d.sync += [pass_no.eq(start_pass), bank.eq(0), first_pass.eq(1)]
                    m.next = "CLEAR"
            with m.State("CLEAR"):              # one cycle: every pass's counters' valid bits
                m.d.sync += [idx.eq(0), scatter.eq(0)] + [v.eq(0) for v in cnt_valid] + \
                    [lo.eq(-1) for lo in digit_lo] + [hi.eq(0) for hi in digit_hi]
                m.next = "WALK"
            with m.State("WALK"):               # the counting walk, or a pass's scatter
                m.d.comb += [self.key_read.eq(1), perm_rd.addr.eq(Mux(bank, cap, 0) + idx)]
                with m.If(idx < self.n):
                    m.d.sync += [sb_valid.eq(1), sb_idx.eq(idx), idx.eq(idx + 1)]
                with m.Elif(drained):
                    m.d.sync += idx.eq(0)
                    with m.If(~scatter):        # every pass's digits counted: the prefix sums
                        m.d.sync += [r_.eq(0) for r_ in running] + [pf_valid.eq(0)]
                        m.next = "PREFIX"
                    with m.Elif(~more_passes):
                        m.d.comb += self.done.eq(1)
                        m.d.sync += [pass_no.eq(0), bank.eq(~bank), first_pass.eq(0)]
                        m.next = "IDLE"
                    with m.Else():              # the next pass scatters
                        m.d.sync += [pass_no.eq(next_pass), bank.eq(~bank), first_pass.eq(0)]
            with m.State("PREFIX"):             # every pass's exclusive prefix sum, one walk
                m.d.comb += [rd.addr.eq(digit_lo[k] + idx) for k, (rd, _) in enumerate(counters)]
                m.d.sync += [pf_valid.eq(idx <= span_max), pf_idx.eq(idx), idx.eq(idx + 1)]
                for k, (_, wr) in enumerate(counters):
                    with m.If(pf_valid & walked[k] & (pf_idx <= span[k])):
                        m.d.comb += [wr.addr.eq(digit_lo[k] + pf_idx), wr.data.eq(running[k]), wr.en.eq(1)]
                        m.d.sync += running[k].eq(running[k] + count_now[k])
                with m.If(pf_valid & (pf_idx == span_max) | no_digits):
                    m.d.sync += [idx.eq(0), scatter.eq(1)]
                    m.next = "WALK"
        return m
