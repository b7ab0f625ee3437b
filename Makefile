# ganforge: `make demo` trains a GAN on Fashion-MNIST on this CPU; `make test` runs the tests.
# Both set up a local virtual environment (.venv) and the Debian dataset package on first use.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
MINUTES ?= 3
# pytest workers: the cores this process may use (nproc would also read OMP_NUM_THREADS)
JOBS   ?= $(shell python3 -c 'import os; print(len(os.sched_getaffinity(0)))' 2>/dev/null || echo 1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-slow lint install data browser clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel of torch first, so nothing pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,serve,text]'
	touch $@

data:
	@test -f $(FMNIST) || ($(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq dataset-fashion-mnist)

browser:
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq chromium chromium-driver)

demo: install data
	$(PY) -m ganforge train --data fashion-mnist --minutes $(MINUTES) --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# one pytest worker per core (pytest-xdist; tests/conftest.py gives each its share of the
# cores), then the tests that start their own torchrun process pairs, on their own
test: install data browser
	$(PY) -m pytest -n $(JOBS) --dist loadfile -m "not slow and not gpu and not torchrun"
	$(PY) -m pytest -m "torchrun and not slow and not gpu"

test-slow: install data
	$(PY) -m pytest -m slow

lint: install
	$(VENV)/bin/ruff check ganforge tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
