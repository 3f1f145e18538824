# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv first
# (once; later runs only check a stamp), then runs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
UPS    := $(VENV)/bin/ups
# The CPU build of torch that lies on this kind of machine's disk. On a GPU machine, set
# TORCH_SPEC to the build you want, e.g. `make setup TORCH_SPEC="torch==2.13.0 --index-url …"`.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.ups-installed
DATA   := data/builtin
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow lint format bench-cache bench-engine bench-throughput bench-data bench-accuracy bench-fno-grid bench-speedup docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# A fresh run folder per `make demo` (runs/<id>), all of them on one leaderboard
# (runs/leaderboard.csv); the data are generated once and reused.
DEMO_ID := demo-$(shell date +%Y%m%d-%H%M%S)

demo: setup
	$(UPS) data generate burgers1d --out $(DATA) --param nu=0.01 --quiet
	$(UPS) data generate darcy2d --out $(DATA) --param beta=1.0 --quiet
	$(UPS) data summary --config configs/demo.yaml
	$(UPS) fast-to-sota --config configs/demo.yaml --run-id $(DEMO_ID) logging.wandb.enabled=true

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# ruff's lint and format check over the whole tree (line length 110, pyproject.toml); CI runs it first.
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# Rewrite the tree in ruff's format (what `make lint` checks).
format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

test-slow: setup
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# One epoch of the demo operator stage: encoding on the fly vs a cold vs a warm latent cache.
bench-cache: setup
	$(PY) benchmarks/latent_cache.py

# Time per training step of the demo operator stage, Lightning vs the native loop, alternating.
bench-engine: setup
	$(PY) benchmarks/engine_overhead.py

# Training samples/s of each of the five stages on the demo config under Lightning.
bench-throughput: setup
	$(PY) benchmarks/throughput.py

# Training from a file of PDEBench's size (10,000 x 201 x 1,024 float32, 8.2 GB, written once into
# data/scale and reused; the latent cache row adds 8.2 GB beside it): samples/s and peak memory from
# HDF5 with 0 and 2 workers, from memory and from the latent cache, the page cache dropped; the time
# to the first step, `ups data summary`, a 90 s autoencoder stage (docs/data.md). About 10 minutes on
# 2 CPU cores, the first time 2 more (writing the file and the cache entry); 17.4 GB of free disk.
bench-data: setup
	$(PY) benchmarks/data_scale.py

# UPS vs PDEBench's FNO (neuraloperator) and two floors on the seven built-in tasks, PDEBench's
# protocol (docs/benchmarks.md): SEEDS cells per task, BUDGET total wall-clock seconds per model
# and cell (3 seeds: about 2 hours on 2 CPU cores), cells already in
# benchmarks/results/accuracy.csv skipped; then the tables and curves (accuracy_table.py).
# The FNO's settings come from its validation grid: `make bench-fno-grid` (about 80 minutes).
# Each task at its own budget (120 s; 240 s on diffusion_reaction2d) unless BUDGET is given.
SEEDS  ?= 3
bench-accuracy: setup
	$(PY) benchmarks/accuracy.py $(if $(BUDGET),--budget-s $(BUDGET)) --seeds $(SEEDS) --resume
	$(PY) benchmarks/accuracy_table.py

bench-fno-grid: setup
	$(PY) benchmarks/fno_grid.py

# UPS against the built-in solvers on Burgers, Fisher-KPP and Darcy: trains three models (180 s each),
# times both sides, about 12 minutes on 2 CPU cores with nothing else running (docs/benchmarks.md).
# Problems already in benchmarks/results/speedup.csv are skipped; delete their rows to measure again.
bench-speedup: setup
	$(PY) benchmarks/speedup.py --resume

# Regenerate the files that are generated from the config schema.
docs: setup
	$(PY) -m ups.config.docs markdown > docs/configuration.md.tmp && mv docs/configuration.md.tmp docs/configuration.md
	$(PY) -m ups.config.docs defaults > configs/defaults.yaml.tmp && mv configs/defaults.yaml.tmp configs/defaults.yaml

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
