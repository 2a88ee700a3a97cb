"""Pipelined binary32 divider (restoring radix-2 digit recurrence, fully unrolled)."""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .common import (Binary, NORMALISE_STAGES, Pipeline, Unpacked,
                     check_pipeline, lzc, normalise_round)

__all__ = ["Divider"]

#: Quotient bits computed: 24 significant bits, a guard bit and one spare for a < b.
QUOTIENT_BITS = 26


class Divider(wiring.Component):
    """Binary32 ``a / b``, correctly rounded (round to nearest even).

    Both significands are normalised to ``[2**23, 2**24)``; a restoring radix-2 recurrence
    computes ``Q = floor(ma * 2**25 / mb)`` (26 bits, so at least 25 significant) and the
    remainder, whose being nonzero is the sticky bit. The recurrence is fully unrolled:
    ``iterations_per_stage`` quotient bits per register point, so a new division starts
    every cycle (initiation interval 1). The shared back end handles subnormal results
    (right shift with sticky) and overflow. ``0/0``, ``inf/inf`` and NaN inputs give
    ``0x7FC00000``; ``x/0`` is a signed infinity, ``x/inf`` a signed zero.

    Parameters
    ----------
    iterations_per_stage : int
        Quotient bits per pipeline stage, 1 to 26 (default 1).
    pipeline : iterable of str, optional
        Register points to enable, out of :attr:`stages` (default: all).

    Attributes
    ----------
    latency : int
        Cycles from an accepted operation to its result:
        ``2 + ceil(26 / iterations_per_stage) + 6`` with every point enabled (34 by
        default).
    stages : tuple of str
        The register points: ``"unpack"``, ``"prenorm"``, ``"div0"`` ... and the back
        end's.

    Members
    -------
    i : In(stream.Signature(Binary))
        Dividend ``a``, divisor ``b``.
    o : Out(stream.Signature(32))
        Quotient bit pattern.

    Initiation interval 1 (one division per cycle); a stalled output holds the pipeline;
    reset empties it.
    """

    def __init__(self, iterations_per_stage=1, pipeline=None):
        if not isinstance(iterations_per_stage, int) or not 1 <= iterations_per_stage <= 26:
            raise ValueError(f"Iterations per stage must be an integer from 1 to 26, not "
                             f"{iterations_per_stage!r}")
        self.iterations_per_stage = iterations_per_stage
        n = -(-QUOTIENT_BITS // iterations_per_stage)
        self.stages = (("unpack", "prenorm") + tuple(f"div{k}" for k in range(n)) +
                       NORMALISE_STAGES)
        self._enabled = check_pipeline("Divider", self.stages, self.stages, pipeline)
        self.latency = len(self._enabled)
        super().__init__({"i": In(stream.Signature(Binary)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        p = Pipeline(m, self.stages, self._enabled, en, self.i.valid)

        # ---- "unpack", "prenorm": classify, normalise both significands ---------------
        a, b = Unpacked(m, self.i.payload.a, "a"), Unpacked(m, self.i.payload.b, "b")
        sign = a.sign ^ b.sign
        nan = (a.is_nan | b.is_nan | (a.is_zero & b.is_zero) | (a.is_inf & b.is_inf))
        inf = a.is_inf | b.is_zero
        zero = a.is_zero | b.is_inf
        v = p.stage("unpack", ma=a.mant, mb=b.mant, lza=lzc(m, a.mant, "lza"),
                    lzb=lzc(m, b.mant, "lzb"), ediff=a.e - b.e + 126, sign=sign, nan=nan, inf=inf,
                    zero=zero)
        # quotient Q = floor(ma * 2**25 / mb): value = Q / 2**25 * 2**(em1 + 1 - 127)
        v = p.stage("prenorm", r=(v["ma"] << v["lza"])[:24], d=(v["mb"] << v["lzb"])[:24],
                    q=C(0, 1), em1=v["ediff"] - v["lza"] + v["lzb"], sign=v["sign"],
                    nan=v["nan"], inf=v["inf"], zero=v["zero"])

        # ---- the recurrence: r < 2*d throughout ------------------------------------------
        carry = ("d", "em1", "sign", "nan", "inf", "zero")
        r, q = v["r"], v["q"]
        done = 0
        for k, name in enumerate(self.stages[2:-len(NORMALISE_STAGES)]):
            for _ in range(min(self.iterations_per_stage, QUOTIENT_BITS - done)):
                d = v["d"]
                diff = r - d
                ge = ~diff[-1]                         # r >= d
                r = p.wire(f"r{done}", Cat(C(0, 1), Mux(ge, diff, r)[:25]))
                q = p.wire(f"q{done}", Cat(ge, q) if done else ge)
                done += 1
            v = p.stage(name, r=r, q=q, **{x: v[x] for x in carry})
            r, q = v["r"], v["q"]

        result = normalise_round(p, x=q, em1=v["em1"], sign=v["sign"], zero_sign=v["sign"],
                                 sticky=r.any(), nan=v["nan"], inf=v["inf"], zero=v["zero"],
                                 special_sign=v["sign"], max_left=1, underflow=True)
        m.d.comb += [self.o.valid.eq(p.finish()), self.o.payload.eq(result)]
        return m
