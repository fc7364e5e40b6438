# `make demo` and `make test` work on a fresh clone with only Python >= 3.11 and make.
# Both install the exact versions in constraints.txt (the tested set); `make lock`
# refreshes that file on purpose from the newest versions pyproject.toml allows.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.jaxlab-installed
DOCS_STAMP := $(VENV)/.jaxlab-docs-installed
LINT_STAMP := $(VENV)/.jaxlab-lint-installed
LOCK := constraints.txt

.PHONY: demo test docs lint install lock clean-venv gpu-check

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxlab train flow-toy2d --workdir runs/flow-toy2d

# On a GPU/TPU machine: devices, throughput probes, msign, bitwise resume, every benchmark's
# and experiment's quick run, within 8 minutes; writes gpu_report/gpu_report.{json,md} as it goes.
gpu-check: $(STAMP)
	$(BIN)/python experiments/gpu_check.py --out gpu_report

# The suite builds the documentation site too (tests/test_docs.py), so it installs the docs extra.
test: $(DOCS_STAMP)
	$(BIN)/python -m pytest -n auto

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test,docs]'
	touch $(DOCS_STAMP)

# The HTML site in docs/_build/html, offline; any Sphinx warning fails the build.
docs: $(DOCS_STAMP)
	$(BIN)/python -m sphinx -b html -W --keep-going -q docs docs/_build/html
	@echo "open docs/_build/html/index.html"

$(LINT_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test,lint]'
	touch $(LINT_STAMP)

# ruff over the repository and mypy over jaxlab/, as configured in pyproject.toml.
lint: $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Resolve the newest allowed versions in a throw-away venv and pin all of them
# (pip included); jaxlab is installed from the tree, and setuptools only builds it.
lock:
	rm -rf $(VENV)-lock
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-lock/bin/python -m pip install --quiet -e '.[test,docs,lint]'
	{ echo "# Exact versions tested by CI; refresh with 'make lock', never by hand."; \
	  $(VENV)-lock/bin/python -m pip freeze --all --exclude-editable | grep -v -i -E '^(jaxlab|setuptools)[= @]' | LC_ALL=C sort -f; } > $(LOCK)
	rm -rf $(VENV)-lock
	@echo "wrote $(LOCK); run 'make clean-venv test' to test it"

clean-venv:
	rm -rf $(VENV)
