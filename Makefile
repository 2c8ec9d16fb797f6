# Two commands on a fresh clone: `make sim` and `make test`. Everything else is set up on demand
# and only once (stamps), so a second run starts at once.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
MP      := $(BIN)/micropython
SIMDIR  ?= sim/flash
PORT    ?= /dev/ttyUSB0
MARCH   ?= xtensawin
JOBS    ?= 8
# Target MicroPython version for the board (tools/build/versions.py); empty: the current release.
MICROPYTHON ?=
ESP32   := build/esp32$(if $(MICROPYTHON),-$(MICROPYTHON))

.PHONY: setup sim test test-class check bench soak build deploy bundle ota clean

setup: $(VENV)/.stamp lib/.stamp sim/frames/.stamp

$(VENV)/.stamp: requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	# the repository and tools/ on the venv's path: firmware, sim, peers, testkit import as packages
	printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/tools" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/esp32cam-alarm.pth"
	touch $@

lib/.stamp: $(VENV)/.stamp tools/build/install_lib.py
	$(BIN)/python tools/build/install_lib.py lib
	touch $@

sim/frames/.stamp: $(VENV)/.stamp tools/sim/scene.py
	$(BIN)/python tools/sim/scene.py sim/frames
	touch $@

sim: setup
	@$(BIN)/python tools/sim/first_config.py $(SIMDIR)
	$(BIN)/python tools/sim/simulate.py --flash $(SIMDIR) $(if $(MICROPYTHON),--micropython $(MICROPYTHON))

# Everything (CI): system tests run in parallel workers, each on its own range of ports.
test: setup
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal tests

# The whole system suite again with micropython-camera-API's class API in the simulator
# (SIM_CAMERA=class) instead of micropython-camera-driver's functions. Not the 256K heap test:
# that stand-in is Python in the firmware's heap (32 KB, 16 KB more than the function
# API's), a board's module is C.
test-class: setup
	SIM_CAMERA=class $(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal -k "not k_heap" tests/system

# The fast subset to run while working: no firmware boots, under a minute.
check: setup
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests/unit

bench: setup build
	$(BIN)/python bench/bench.py

soak: setup build
	$(BIN)/python bench/soak.py

build: $(VENV)/.stamp lib/.stamp
	$(BIN)/python tools/build/build.py --micropython "$(MICROPYTHON)" --march $(MARCH) $(ESP32)
	$(BIN)/python tools/build/build.py --march x64 build/x64

deploy: build lib/.stamp
	$(BIN)/python tools/build/deploy.py --port $(PORT) --build $(ESP32) $(if $(filter-out 0,$(DRY_RUN)),--dry-run)

# Update over the air: a bundle of build/esp32 signed with update.key of CONFIG (the board's
# config.json); `make ota HOST=192.168.4.1` sends it and waits for the board's verdict.
CONFIG  ?= config.json
bundle: build
	$(BIN)/python tools/build/bundle.py --build build/esp32 --march $(MARCH) --config $(CONFIG)

ota: build
	$(BIN)/python tools/build/ota.py --host $(HOST) --config $(CONFIG) --build build/esp32 --march $(MARCH)

clean:
	rm -rf build sim lib $(VENV)
