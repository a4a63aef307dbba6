# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

# torch is pinned and installed first: an unpinned torch resolves to a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main flow on the embedded world: select -> build -> unlearn (sspu, rmu, ga, align) -> eval.
demo: $(STAMP)
	$(BIN)/hookunlearn demo --force

# Two workers, one torch thread each (tests/conftest.py), files kept together: the 2-core CI
# machine runs the suite in about half the time of one process. PYTEST_WORKERS=0 runs in-process.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check hookunlearn cli tests benchmarks
	$(BIN)/ruff format --check hookunlearn cli tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/unlearn_step.py
	$(BIN)/python benchmarks/select_memory.py
	$(BIN)/python benchmarks/select_throughput.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/bridge_vs_hooked.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# The documentation, offline: regenerate the CLI reference from the Typer app, then build with
# mkdocs-material into site/ (strict: a broken link or stale nav fails the build).
.PHONY: docs
docs: $(STAMP)
	$(BIN)/python scripts/gen_cli_docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site
