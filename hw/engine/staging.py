"""Where a staging row lives: the layout of the pooled output and the upstream gradient, the
contract between the host (which writes the gradient and reads the pooled output) and the
engine.  Stated once, for Python integers and Amaranth values alike.

Staging row ``r = b*T + t`` holds bag ``b`` of table ``t``; it has ``row_beats`` (D/16)
beats.  With stripe ``S`` (a power of two) the rows are dealt in groups of ``S``: beat ``j``
of row ``r`` lies in block ``(r // S) * row_beats + j`` of ``S`` beats, at ``r mod S`` in
it.  ``S = 1`` is the row-major layout (row ``r`` at ``r * row_beats``).  With ``S`` equal
to the DRAM side's chunk (the beats kept in one rank, :mod:`refree.hw.ddr4.mapping`) a row's
beats fall in consecutive chunks, i.e. on successive ranks: `baseline`'s backward, which
reads a bag's gradient row once per lookup, then loads every rank alike instead of the one
that holds the row, and a stream of consecutive rows still walks open DRAM rows (each
rank's chunks are consecutive rows' beats).  The chip's stripe is
:attr:`refree.hw.ddr4.mapping.AddressMapping.staging_stripe`.
"""

__all__ = ["staging_beat", "staging_beats", "check_stripe"]


def check_stripe(stripe):
    if isinstance(stripe, bool) or not isinstance(stripe, int) or stripe < 1 or stripe & (stripe - 1):
        raise ValueError(f"the staging stripe must be a power of two, not {stripe!r}")
    return stripe.bit_length() - 1


def staging_beat(base, row, beat, row_beats, stripe=1):
    """Beat address of beat ``beat`` of staging row ``row`` of the array at ``base``.
    ``row``, ``beat`` and ``base`` may be integers or Amaranth values; ``row_beats`` and
    ``stripe`` are integers.  Beat ``j`` lies ``j * stripe`` beats after beat 0."""
    s = check_stripe(stripe)
    return base + ((((row >> s) * row_beats) + beat) << s) + (row & (stripe - 1))


def staging_beats(rows, row_beats, stripe=1):
    """Beats an array of ``rows`` staging rows spans (whole groups of ``stripe`` rows)."""
    s = check_stripe(stripe)
    return (((rows + (stripe - 1)) >> s) * row_beats) << s      # (unsigned: no subtraction)
