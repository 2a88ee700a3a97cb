"""On-chip SRAM with a read port that sees the write of its own cycle.

Every read-modify-write table of the engine (the analyzer's slot and pair tables, the
sorter's digit counters and permutations, the scheduler's class tables) reads an address
and writes it back a cycle later; a read of that address in the write's cycle must see the
new value, so the read port is transparent to the write port.
"""
from amaranth.lib import memory

__all__ = ["rmw_memory"]


def rmw_memory(m, name, shape, depth, reads=1):
    """Add ``memory.Memory(shape, depth)`` to ``m`` as submodule ``name``; return its
    (synchronous, write-transparent) read port and its write port, or, with ``reads`` > 1,
    the list of that many read ports and the write port.  The contents are not
    initialised: whoever owns the table tracks which words are valid."""
    m.submodules[name] = mm = memory.Memory(shape=shape, depth=depth, init=[])
    wr = mm.write_port()
    ports = [mm.read_port(transparent_for=(wr,)) for _ in range(reads)]
    return (ports[0] if reads == 1 else ports), wr
