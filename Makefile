# Two commands set up a fresh machine and run everything:
#   make demo   train the main job (Fashion-MNIST) and write its report
#   make test   run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch and torchvision as they ship for Python 3.11 on x86-64; newer versions work too.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-slow lint bench setup data clean

$(BIN)/alexnet: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/alexnet data

# Debian ships Fashion-MNIST as a package; install it when we may (root) and it is missing.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi

demo: setup
	$(BIN)/alexnet train --recipe fashion-mnist

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: $(BIN)/alexnet
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: setup
	$(BIN)/python bench/lrn.py
	$(BIN)/python bench/fashion_mnist.py
	$(BIN)/python bench/cifar10.py --data ../shared/data/cifar10-jpeg.tar.gz

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache src/*.egg-info
