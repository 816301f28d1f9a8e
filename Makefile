# Two commands set up a fresh machine and run everything:
#   make demo   train the main job (Fashion-MNIST) and write its report
#   make test   run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch and torchvision as they ship for Python 3.11 on x86-64; newer versions work too.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-slow test-notebooks test-container lint bench setup data compiler clean

$(BIN)/alexnet: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev,export,course]'
	touch $@

setup: $(BIN)/alexnet data compiler

# Debian ships Fashion-MNIST as a package; install it when we may (root) and it is missing.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi

# The LRN kernel (src/alexnet/ops/csrc) is compiled on first use with the machine's C++ compiler;
# without one the slower PyTorch path runs. Install g++ when we may (root) and it is missing.
compiler:
	@if ! command -v g++ >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++; \
	fi

demo: setup
	$(BIN)/alexnet train --recipe fashion-mnist

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# Every notebook top to bottom, shortened (ALEXNET_NOTEBOOK_QUICK=1), in a scratch folder.
test-notebooks: setup
	$(BIN)/python -m pytest -q -m notebooks tests/test_notebooks.py

# The course's container, built with podman from docker/Dockerfile and run (needs root, as CI
# is): installs podman, runc and debootstrap when missing. tests/test_container.py says how.
test-container: setup
	@if ! { command -v podman && command -v runc && command -v debootstrap; } >/dev/null \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends podman runc debootstrap uidmap; \
	fi
	$(BIN)/python -m pytest -q -m container -p no:cacheprovider tests/test_container.py

lint: $(BIN)/alexnet
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

# Benchmarks, each writing bench/results/<name>-<cpu kind>.json, then one table of them all.
# A subset: make bench BENCH="lrn throughput". ISA=avx2 holds the libraries to AVX2 (an AVX2-only
# CPU's code paths, emulated), ISA=avx512 to AVX-512 without bfloat16 (an older Xeon's); each
# result then names the kind it stood for. All of them take over an hour (paper_recipe: 30 min
# to 2 hours, by the CPU).
BENCH ?= lrn throughput inference winograd loader ddp fashion_mnist cifar10 caltech101 paper_recipe
ISA   ?= native
CIFAR ?= ../shared/data/cifar10-jpeg.tar.gz
bench: setup
	@for b in $(BENCH); do \
		args="--isa $(ISA)"; \
		if [ $$b = cifar10 ]; then args="$$args --data $(CIFAR)"; fi; \
		echo "== bench/$$b.py $$args"; \
		$(BIN)/python bench/$$b.py $$args || exit 1; \
	done
	$(BIN)/python bench/table.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache src/*.egg-info
