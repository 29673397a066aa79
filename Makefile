# One-command setup for a fresh machine; every target is idempotent.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
TORCH   ?= torch==2.13.0

.PHONY: setup demo test test-fast clean reproduce mutation

setup: $(VENV)/.stamp-python node_modules/.stamp-npm browser

# Debian's chromium + chromedriver for the headless browser test of /docs (installed when
# missing and run as root, as in CI; elsewhere that test skips, and fails under CI=true).
.PHONY: browser
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || \
	  echo "no chromium/chromedriver: apt-get install chromium chromium-driver (the /docs browser test skips)"

$(VENV)/bin/python:
	python3 -m venv $(VENV)

# torch first: the pinned CPU wheel, so nothing later pulls CUDA packages.
$(VENV)/.stamp-python: $(VENV)/bin/python pyproject.toml
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[dev]"
	touch $@

node_modules/.stamp-npm: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error --ignore-scripts
	touch $@

demo: setup
	$(VENV)/bin/bmfl demo

# with line coverage (pytest-cov; [tool.coverage] in pyproject.toml): the total is the
# last line of the table; CI=true (set by CI runners) fails on a missing Anvil/node/IPFS.
# TEST_JOBS pytest-xdist workers, one test file each at a time (a file's module fixtures,
# e.g. its Anvil, stay in one worker); most end-to-end tests wait on their processes. Files
# go out in collection order, those with a slow test first (tests/conftest.py).
TEST_JOBS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder --durations=15 --cov --cov-report=term:skip-covered

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The papers' experiment grid → docs/results.md, docs/results/: about 75 CPU-minutes,
# JOBS simulations at once (default: one per core).
JOBS    ?= $(shell nproc)
reproduce: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/bmfl reproduce --publish --jobs $(JOBS)

# Mutation testing (mutmut 3, [tool.mutmut] in pyproject.toml): mutates the money, signature,
# filter, aggregation and upload-verification code in a copy (mutants/), runs the fast tests
# that exercise it, and writes docs/mutation.md (kill rate, every survivor with its reason).
MUTMUT_JOBS ?= $(shell nproc)
mutation: setup
	OMP_NUM_THREADS=1 BMFL_ANVIL=$${BMFL_ANVIL:-$$(ls $(CURDIR)/node_modules/@foundry-rs/anvil-*/bin/anvil | head -1)} \
		$(VENV)/bin/mutmut run --max-children $(MUTMUT_JOBS) || true
	$(PY) tests/mutation_report.py > docs/mutation.md
	@tail -n +1 docs/mutation.md | sed -n '1,/^## Survivors/p'

clean:
	rm -rf $(VENV) node_modules runs .pytest_cache mutants .coverage

.PHONY: bench
# every benchmark in bench/ (ours vs baselines); writes docs/performance.md
bench: setup $(VENV)/.stamp-bench
	$(PY) -m bench.run_all

$(VENV)/.stamp-bench: $(VENV)/.stamp-python
	$(PIP) install --quiet -e ".[dev,bench]"
	touch $@
