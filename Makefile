# Commands for a new user: `make report` and `make test`; `make pull` in a clone whose results were pushed
# to a DVC remote. All create .venv if missing and install the pinned set (requirements.lock) first.
# SNAKEMAKE_ARGS passes more options, e.g. SNAKEMAKE_ARGS="--configfile my.yaml".
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
# Test processes (pytest-xdist); 0 runs the suite in this one process.
TEST_WORKERS ?= 2

SNAKEMAKE := PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake

.PHONY: report pull test install lock clean-results

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

# The Snakefile's default target is results/report.pdf once the chain reaches it; until then it is the
# furthest output that exists (see rule `all`).
report: $(STAMP)
	$(SNAKEMAKE) --cores $(CORES) $(SNAKEMAKE_ARGS)

# Data, checkpoints and results from the DVC remote (.dvc/config) instead of recomputing them. DVC writes
# every file with a new modification time, which Snakemake would read as "inputs changed, rerun all";
# --touch marks the pulled outputs up to date, in the DAG's order, without running anything.
pull: $(STAMP)
	$(BIN)/dvc pull
	$(SNAKEMAKE) --cores $(CORES) --touch $(SNAKEMAKE_ARGS)

# The workflow tests' serial links (dvc repro runs one stage at a time) leave a core idle; a second worker
# fills it. Tests sharing the Snakemake-built tiny chain stay on one worker (conftest.TINY_CHAIN_WORKER).
test: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Re-resolve the pins from pyproject.toml's ranges (needs the package registry).
lock:
	rm -rf /tmp/stage-lock-venv && $(PYTHON) -m venv /tmp/stage-lock-venv
	/tmp/stage-lock-venv/bin/pip install --quiet --upgrade pip
	/tmp/stage-lock-venv/bin/pip install --quiet -e .[test]
	{ echo "# Pinned, tested set for Python 3.11 (CPU). Regenerate with: make lock"; \
	  echo "# numpy<2 because nuscenes-devkit 1.2.0 requires it: pandas 2.x and pyarrow 20 are the newest that run on numpy 1.26."; \
	  /tmp/stage-lock-venv/bin/pip freeze --all --exclude-editable | grep -v -e '^-e' -e '^pip=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean-results:
	rm -rf results .snakemake
