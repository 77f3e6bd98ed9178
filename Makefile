# Two commands on a fresh machine:
#   make demo   set up, make the built-in demo dataset, train, calibrate, detect and evaluate on it
#   make test   set up and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo_run
EPOCHS ?= 20
MODALITY ?= flair

.PHONY: setup demo test bench clean

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	bash scripts/demo.sh $(DEMO) $(EPOCHS) $(MODALITY)

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/restoration_speed.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
