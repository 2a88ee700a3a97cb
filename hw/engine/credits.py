"""Credits of a pipeline whose results wait in an output queue.

A unit of fixed latency (an FMA bank, a multiplier, a divider, a memory read) cannot stop
what it has in flight, so it takes an entry only while its output queue (a
``SyncFIFOBuffered``) has a place for it, counting the entries still in flight: backpressure
never reaches the pipeline and nothing in flight is lost.

An entry holds its place from the cycle after it is taken until the cycle after its
consumer takes it out of the queue: ``latency`` cycles in flight, then two before the
buffered queue shows it at its output, then the cycle its level falls.  So a result a cycle
needs ``latency + 3`` places in use at once, and :func:`room` keeps one more free
(measured: ``latency + 3`` places held an FMA bank of latency 13 to 15 results in 16
cycles, a multiplier of latency 11 to 13 in 14, the row store's reads to 3 in 4).
"""

__all__ = ["queue_depth", "room"]


def queue_depth(latency):
    """Places of the output queue behind a pipeline of ``latency`` cycles that takes an
    entry every cycle while its consumer keeps up."""
    return latency + 4


def room(queue, in_flight):
    """An entry may be taken this cycle: ``queue``'s level plus the ``in_flight`` entries
    (taken, not yet written to it) leave a place."""
    return queue.level + in_flight < queue.depth - 1
