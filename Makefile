# Two commands on a fresh clone: `make sim` and `make test`. Everything else is set up on demand
# and only once (stamps), so a second run starts at once.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
MP      := $(BIN)/micropython
SIMDIR  ?= sim/flash
PORT    ?= /dev/ttyUSB0
MARCH   ?= xtensawin

.PHONY: setup sim test bench soak build deploy clean

setup: $(VENV)/.stamp lib/.stamp sim/frames/.stamp

$(VENV)/.stamp: requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

lib/.stamp: $(VENV)/.stamp tools/install_lib.py
	$(BIN)/python tools/install_lib.py lib
	touch $@

sim/frames/.stamp: $(VENV)/.stamp tools/scene.py
	$(BIN)/python tools/scene.py sim/frames
	touch $@

sim: setup
	@$(BIN)/python tools/sim_config.py $(SIMDIR)
	$(BIN)/python tools/simulate.py --flash $(SIMDIR)

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup build
	$(BIN)/python tools/bench.py

soak: setup build
	$(BIN)/python tools/soak.py

build: $(VENV)/.stamp lib/.stamp
	$(BIN)/python tools/build.py --march $(MARCH) build/esp32
	$(BIN)/python tools/build.py --march x64 build/x64

deploy: build lib/.stamp
	$(BIN)/python tools/deploy.py --port $(PORT) --build build/esp32 $(if $(filter-out 0,$(DRY_RUN)),--dry-run)

clean:
	rm -rf build sim lib $(VENV)
