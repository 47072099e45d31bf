# Two commands do everything on a fresh clone: `make quickstart` and `make test`.
# TORCH picks the PyTorch build: the default pin takes the CPU wheel on this project's
# machines; GPU users pass the build they want, e.g. `make quickstart TORCH=torch==2.13.0`
# after pointing pip at their CUDA wheel index (see README).
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kdmech-installed

.PHONY: quickstart quickstart-bert test test-slow bench install clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/kdmech quickstart --config configs/quickstart.yaml

quickstart-bert: $(STAMP)
	$(BIN)/kdmech quickstart --config configs/quickstart-bert.yaml

# The report test renders in headless Chromium (Debian's package); install it when we can.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } \
	  || echo "chromium is not installed: the report rendering test will be skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
