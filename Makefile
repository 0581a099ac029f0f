# Transformers, step by step: set up, build the book, run the tests.
#
#   make book    set up $(VENV) and build the web book into _build/html
#   make test    set up $(VENV), install Chromium if missing, run the whole test suite
#   make lint    ruff
#   make clean   remove build outputs (keeps the virtual environment)
#
# Variables: VENV (default .venv), PYTHON (interpreter that creates the venv),
# INSTALL_CHROMIUM=0 to skip installing Debian's chromium (the browser tests need it),
# PYTEST_ARGS (extra pytest arguments, e.g. PYTEST_ARGS="-m 'not slow'").

VENV ?= .venv
PYTHON ?= python3
INSTALL_CHROMIUM ?= 1
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all venv book test chromium lint clean distclean

all: book

venv: $(STAMP)

# Re-run only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

book: venv
	$(BIN)/jupyter-book build . -W -n --keep-going

chromium:
ifeq ($(INSTALL_CHROMIUM),1)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
endif

test: venv chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
