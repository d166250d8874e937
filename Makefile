# The two commands: `make demo` runs the main job on embedded defaults, `make test` runs the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[all]"
	# onnx2torch without its torchvision requirement: torchvision's wheels would replace the pinned CPU torch
	$(BIN)/pip install -q --disable-pip-version-check --no-deps onnx2torch==1.5.15
	touch $@

demo: $(BIN)/.installed
	$(BIN)/edgefleet demo

test: $(BIN)/.installed
	$(BIN)/pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy targets fleet agent hub converters

bench: $(BIN)/.installed
	for script in bench/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
