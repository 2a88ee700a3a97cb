"""The buffer chip of the LRDIMM: the NMP engine and its DRAM side together."""
