"""A performance model of the buffer chip in Python (issue 17): cycles of a job without
simulating the RTL, for batches no RTL simulation reaches.  :mod:`.dram_side` models the
DRAM side (the rank engines' rules, clock by clock)."""
