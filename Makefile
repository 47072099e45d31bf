# Two commands do everything on a fresh clone: `make quickstart` and `make test`.
# TORCH picks the PyTorch build: the default pin takes the CPU wheel on this project's
# machines; GPU users pass the build they want, e.g. `make quickstart TORCH=torch==2.13.0`
# after pointing pip at their CUDA wheel index (see README).
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kdmech-installed

.PHONY: lint quickstart quickstart-bert quickstart-llama test test-slow bench install clean browser

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

quickstart-llama: $(STAMP)
	$(BIN)/kdmech quickstart --config configs/quickstart-llama.yaml

# The report test renders in headless Chromium (Debian's package); install it when we can.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } \
	  || echo "chromium is not installed: the report rendering test will be skipped"

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Every bench/*.py at its quick default (each has --full for the long version; under 15
# minutes in all on the 2-core machine except discovery_scale, whose part 1 at GPT-2-small shape
# takes about 40 minutes on it; `python bench/discovery_scale.py --skip_scale` is seconds);
# each prints its own table, then one summary table of
# every bench's wall time, exit status and BENCH line. Logs in runs/bench/.
bench: $(STAMP)
	@mkdir -p runs/bench; : > runs/bench/summary.md; failed=0; \
	for b in bench/*.py; do n=$$(basename $$b .py); echo "== $$b"; s=$$(date +%s); \
	  { $(BIN)/python $$b; echo $$? > runs/bench/$$n.rc; } 2>&1 | tee runs/bench/$$n.log; \
	  rc=$$(cat runs/bench/$$n.rc); [ "$$rc" = 0 ] || failed=1; \
	  line=$$(grep '^BENCH ' runs/bench/$$n.log | tail -1 | sed 's/^BENCH [^:]*: //'); \
	  echo "| $$n | $$(( $$(date +%s) - s )) | $$rc | $$line |" >> runs/bench/summary.md; done; \
	echo; echo "| bench | wall s | exit | result |"; echo "|---|---|---|---|"; cat runs/bench/summary.md; \
	exit $$failed

clean:
	rm -rf $(VENV) runs .pytest_cache
