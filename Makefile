# Everything runs from a project-local virtual environment, created on first use.
# constraints.txt pins torch to the CPU build these machines hold on local disk.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint demo demo-seg bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

lint: setup
	$(PY) -m ruff check gfnet_cli tests benchmarks scripts

test: lint
	$(PY) -m pytest -q

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh

demo-seg: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo_segmentation.sh

bench: setup
	$(PY) benchmarks/bench_inference.py

clean:
	rm -rf $(VENV) demo-output
