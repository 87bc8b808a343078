# The two commands of the README. Each one sets up what it needs first (idempotent).
#   make run                 the default job: preview profile on the demo song -> outputs/<date>/<time>/master.mp4
#   make run ARGS="song=demo render.fps=24"   any Hydra overrides
#   make test                the whole test suite (what CI runs)
VENV ?= .venv
STAMP := $(VENV)/.mvgen-installed

.PHONY: run test setup bench

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/mvgen $(ARGS)

test: $(STAMP)
	bash scripts/install_browser.sh
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/bench_default_run.py
