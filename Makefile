# `make demo` and `make test` work on a fresh clone with only Python >= 3.11 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.jaxlab-installed

.PHONY: demo test install clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxlab train flow-toy2d --workdir runs/flow-toy2d

test: $(STAMP)
	$(BIN)/python -m pytest -n auto

clean-venv:
	rm -rf $(VENV)
