# Set-up and entry points.  `make run` and `make test` each create the virtual environment
# (.venv) and install everything on first use, so a fresh machine needs nothing else.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run report reports test test-slow bench bench-fp bench-dram bench-scale bench-hot synth clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# (setuptools prints a notice, as a warning, on every editable install that maps packages
	@# to folders of other names, as refree.hw -> hw/; nothing to fix, so it is filtered)
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/pip install -q -e '.[test]'
	@# FBGEMM's release for torch 2.13.0; --no-deps: its wheel does not pin torch, so pip adds it alone
	$(BIN)/pip install -q --no-deps fbgemm-gpu-cpu==1.8.0
	@# Icarus Verilog comes from Debian; install it when missing and we are root.
	@command -v iverilog >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -q iverilog >/dev/null; } \
	  || echo "warning: iverilog missing and not root: Icarus tests will be skipped"
	touch $(STAMP)

# The main job: a MovieLens step on the engine's RTL, checked against the golden model.
run: $(STAMP)
	$(BIN)/refree rtl-check --trace movielens --batch-size 128

# The redundancy report of the same batch (golden model only).
report: $(STAMP)
	$(BIN)/refree analyze --trace movielens --batch-size 128

# The whole test suite (what CI runs).
test: $(STAMP)
	$(BIN)/pytest

# Long runs: million-vector sweeps and soak tests.
test-slow: $(STAMP)
	$(BIN)/pytest -m slow

bench: $(STAMP)
	$(BIN)/python -m refree.golden.bench

# The main job for R = 1, 2, 4 ranks on the MovieLens (B = 128) and Meta-calibrated (seed 3,
# B = 128) traces (one Verilator build per R), then one table: per trace, R, mode and job the
# cycles, the three bounds of docs/design.md section 3, cycles / roofline, moved and compulsory
# beats, bus utilisation, and the step speed-up of dedup and refree over baseline; the report
# (Markdown, JSON, plots, FBGEMM's CPU operator beside it) in reports/bench-b128.
bench-dram: $(STAMP)
	$(BIN)/refree bench --traces movielens,meta --batch-size 128 --ranks 1,2,4 --fbgemm --out reports/bench-b128

# The reports at scale (the golden model's bounds, no simulation; the performance model's
# cycles; a local Dask cluster, the runs cached): reports/README.md lists them.
reports: $(STAMP)
	$(BIN)/refree sweep --traces movielens --batch-sizes 128,1024,4096 --ranks 1,2,4 \
	  --title "MovieLens: bounds against batch size and ranks" --out reports/scale-movielens
	$(BIN)/refree sweep --traces zipf --alphas 0.8,1.0,1.2 --batch-sizes 1024 --ranks 1,2,4 \
	  --title "Zipf: bounds against skew" --out reports/scale-zipf
	$(BIN)/refree sweep --traces meta --seed 3 --tables 8 --batch-sizes 1024,65536 --ranks 1,4 --max-bag-len 1024 \
	  --title "Meta-calibrated, T = 8: bounds up to B = 65,536" --out reports/scale-meta
	$(BIN)/refree sweep --kind model --traces movielens --batch-sizes 128,1024,4096 --ranks 1,2,4 \
	  --title "MovieLens: the performance model's cycles against batch size and ranks" --out reports/model-movielens
	$(BIN)/refree sweep --kind model --traces meta --seed 3 --tables 8 --batch-sizes 1024,65536 --ranks 1,4 \
	  --max-bag-len 1024 --title "Meta-calibrated, T = 8: the performance model's cycles up to B = 65,536" \
	  --out reports/model-meta
	$(BIN)/refree sweep --kind model --traces zipf --alphas 0.8,1.0,1.2 --batch-sizes 1024 --ranks 1,2,4 \
	  --title "Zipf: the performance model's cycles against skew" --out reports/model-zipf
	$(BIN)/python -m refree.golden.perf --out reports/model-calibration.md

# The golden model's counts and step and the performance model at Meta's B = 65,536, T = 8:
# their run times (issue 17's goal: each under a minute).
bench-scale: $(STAMP)
	$(BIN)/python -m refree.golden.perf.bench

# FAE's hot-row store (issue 18): 20 consecutive batches after 5 profiled, each mode with and
# without a store of 4,096 beats: MovieLens B = 128 and Meta's calibrated trace B = 128 on the
# chip's RTL (four chips, about 8 minutes each to build; then about 20 and 45 minutes), and
# MovieLens B = 1,024 on the performance model (about 15 minutes).
bench-hot: $(STAMP)
	$(BIN)/python -m refree.verif.bench_hot --out reports/bench-hot.md
	$(BIN)/python -m refree.verif.bench_hot --trace meta --config reports/bench-hot-meta.toml \
		--out reports/bench-hot-meta.md
	$(BIN)/python -m refree.verif.bench_hot --engine model --batch-size 1024 --out reports/bench-hot-b1024.md

# Simulated binary32 operations per second under Verilator.
bench-fp: $(STAMP)
	$(BIN)/python -m refree.verif.bench_fp

# Yosys + nextpnr-ecp5 figures of the arithmetic units (minutes; the vector unit ~8 min).
synth: $(STAMP)
	$(BIN)/refree synth

clean:
	rm -rf $(VENV) build out sim_build
