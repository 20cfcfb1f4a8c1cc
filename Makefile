# Two commands for a new user: `make report` and `make test`. Both create .venv if missing and install
# the pinned set (requirements.lock) first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: report test install lock clean-results

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
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES)

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest $(PYTEST_ARGS)

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
