"""IEEE-754 binary32 arithmetic units (Amaranth components with stream interfaces).

Every unit follows the design's arithmetic contract: round to nearest even, subnormal
inputs and outputs exact, IEEE signed zeros and infinities, and every NaN result is
``0x7FC00000``. Each is a ``wiring.Component`` with an ``i`` stream of operands (a struct
payload, first field in the low bits) and an ``o`` stream of 32-bit results, accepts one
operation per cycle (initiation interval 1, the divider and square root too), holds its
whole pipeline while ``o`` is stalled, and has a constructor ``pipeline`` argument that
picks the register points (``unit.latency`` is their number). Reset empties a pipeline.

=========================================  ================  =======================
Unit (module)                              operands          default latency (cycles)
=========================================  ================  =======================
:class:`~.adder.Adder`                     a, b, sub         8
:class:`~.multiplier.Multiplier`           a, b              11
:class:`~.fma.FusedMultiplyAdd`            a, b, c (a*b+c)   13
:class:`~.divider.Divider`                 a, b (a/b)        34 (26 quotient stages)
:class:`~.sqrt.SquareRoot`                 a                 34 (26 root stages)
=========================================  ================  =======================

The defaults close at about 150 MHz on an ECP5-85 (``refree synth``); the multiplier and
FMA take ``dsp="ecp5"`` to use ``MULT18X18D`` blocks with their internal registers (same
latency). :class:`~.vector.VectorUnit` is a P-lane vector unit built from them (element-
wise copy, add, multiply/FMA/divide by a scalar, SGD; a library unit: the engine's lanes
are its own).
The shared pieces (pipeline builder, unpacking, leading-zero count, the normalise-round-
pack back end, the split 24x24 multiplier) live in :mod:`.common`.
"""
