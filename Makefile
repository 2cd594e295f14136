# Two entry points that work from a fresh clone: `make quickstart` and `make test`.
# Both create .venv and install fuss-ray (with torch 2.14.1, which pip takes from local disk
# where the machine provides it) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

.PHONY: install quickstart test lint
install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(VENV)/bin/fuss-ray run configs/quickstart.yaml

# Two workers keep two cores busy: on the 2-core CI machine the suite is CPU-bound (with
# three it took longer, the cores 98% busy), most of it processes starting (each actor,
# command and Tune trial imports torch). A module's tests stay on one worker, which sets
# up its fixtures once.
TEST_WORKERS ?= 2
test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=25

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check fuss_ray tests tools
	$(VENV)/bin/mypy
