# `make demo` and `make test` work on a fresh clone with only Python >= 3.11 and make.
# Both install the exact versions in constraints.txt (the tested set); `make lock`
# refreshes that file on purpose from the newest versions pyproject.toml allows.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.jaxlab-installed
LOCK := constraints.txt

.PHONY: demo test install lock clean-venv

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxlab train flow-toy2d --workdir runs/flow-toy2d

test: $(STAMP)
	$(BIN)/python -m pytest -n auto

# Resolve the newest allowed versions in a throw-away venv and pin all of them
# (pip included); jaxlab is installed from the tree, and setuptools only builds it.
lock:
	rm -rf $(VENV)-lock
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-lock/bin/python -m pip install --quiet -e '.[test]'
	{ echo "# Exact versions tested by CI; refresh with 'make lock', never by hand."; \
	  $(VENV)-lock/bin/python -m pip freeze --all --exclude-editable | grep -v -i -E '^(jaxlab|setuptools)[= @]' | LC_ALL=C sort -f; } > $(LOCK)
	rm -rf $(VENV)-lock
	@echo "wrote $(LOCK); run 'make clean-venv test' to test it"

clean-venv:
	rm -rf $(VENV)
