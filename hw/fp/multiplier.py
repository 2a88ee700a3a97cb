"""Pipelined binary32 multiplier."""

from amaranth.hdl import C, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .common import (Binary, MULTIPLY_STAGES, NORMALISE_STAGES,
                     Pipeline, Unpacked, check_dsp, check_pipeline, lzc, multiply_24x24,
                     normalise_round)

__all__ = ["Multiplier"]


class Multiplier(wiring.Component):
    """Binary32 ``a * b``, correctly rounded (round to nearest even).

    Subnormal significands are first normalised (leading-zero count and shift, with the
    exponent allowed below the normal range), so the 48-bit product of the significands is
    in ``[2**46, 2**48)``; the product is four 12x12 partial products (one DSP block each
    on ECP5) summed after a register. The shared back end shifts at most one place left,
    or right into the subnormal range with a sticky bit, rounds and packs. The sign is
    ``a.sign ^ b.sign`` for every result but NaN; ``0 * inf`` and NaN inputs give
    ``0x7FC00000``.

    Parameters
    ----------
    pipeline : iterable of str, optional
        Register points to enable, out of :attr:`STAGES` (default: all).
    dsp : str
        ``"generic"`` (``*``, any target) or ``"ecp5"`` (explicit ``MULT18X18D`` blocks
        whose internal registers hold the operands and partial products; same latency).

    Attributes
    ----------
    latency : int
        Cycles from an accepted operation to its result (11 by default).

    Members
    -------
    i : In(stream.Signature(Binary))
        Operands ``a``, ``b``.
    o : Out(stream.Signature(32))
        Result bit pattern.

    One operation per cycle; a stalled output holds the pipeline; reset empties it.
    """

    STAGES = ("unpack",) + MULTIPLY_STAGES + NORMALISE_STAGES
    DEFAULT_PIPELINE = STAGES

    def __init__(self, pipeline=None, dsp="generic"):
        self.dsp = check_dsp("Multiplier", dsp)
        self._enabled = check_pipeline("Multiplier", self.STAGES, self.DEFAULT_PIPELINE,
                                       pipeline)
        self.latency = len(self._enabled)
        super().__init__({"i": In(stream.Signature(Binary)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        p = Pipeline(m, self.STAGES, self._enabled, en, self.i.valid)

        # ---- "unpack": classify, count leading zeros of subnormal significands --------
        a, b = Unpacked(m, self.i.payload.a, "a"), Unpacked(m, self.i.payload.b, "b")
        sign = a.sign ^ b.sign
        nan = a.is_nan | b.is_nan | (a.is_inf & b.is_zero) | (a.is_zero & b.is_inf)
        inf = a.is_inf | b.is_inf
        # a zero operand needs no special case: its significand is 0, so is the product
        v = p.stage("unpack", ma=a.mant, mb=b.mant, lza=lzc(m, a.mant, "lza"),
                    lzb=lzc(m, b.mant, "lzb"), esum=a.e + b.e - 127, sign=sign,
                    nan=nan, inf=inf)

        # ---- "prenorm": normalise the significands (registered by the multiplier) ------
        # product significand: value = P / 2**47 * 2**(em1 + 1 - 127)
        product, v = multiply_24x24(
            p, (v["ma"] << v["lza"])[:24], (v["mb"] << v["lzb"])[:24], dsp=self.dsp,
            em1=v["esum"] - v["lza"] - v["lzb"], sign=v["sign"], nan=v["nan"], inf=v["inf"])

        result = normalise_round(p, x=product, em1=v["em1"], sign=v["sign"],
                                 zero_sign=v["sign"], sticky=C(0, 1), nan=v["nan"],
                                 inf=v["inf"], special_sign=v["sign"], max_left=1,
                                 underflow=True)
        m.d.comb += [self.o.valid.eq(p.finish()), self.o.payload.eq(result)]
        return m
