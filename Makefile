# The two commands in the README. Both set up .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The emulated aarch64 board (cross toolchain, qemu-user, sysroot, aarch64 wheels); not committed.
BOARD := build/aarch64/.ready
# The emulated Cortex-M boards (arm-none-eabi-gcc, newlib, qemu-system-arm via apt); not committed.
MCU := build/mcu/.ready

.PHONY: demo test bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: it is the CPU wheel on these machines; any other spec pulls CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[compile,dev]'
	touch $(STAMP)

$(BOARD): $(STAMP) tools/board/setup_aarch64.sh
	PY=$(BIN)/python bash tools/board/setup_aarch64.sh build/aarch64
	touch $(BOARD)

$(MCU): tools/board/setup_mcu.sh
	bash tools/board/setup_mcu.sh
	mkdir -p $(dir $(MCU)) && touch $(MCU)

demo: $(STAMP)
	$(BIN)/python -m tools.demo

test: $(STAMP) $(BOARD) $(MCU)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python -m tools.bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
