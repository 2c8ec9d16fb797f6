# Simulator stand-in for the ESP32 port's `esp32` module (runs inside the MicroPython unix
# VM). See docs/simulator.md.
import gc
import time

import simstate as _s

HEAP_DATA = 4   # MALLOC_CAP_8BIT
HEAP_EXEC = 1   # MALLOC_CAP_EXEC
WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True

_min_free = [None]


def idf_heap_info(capabilities):
    """One region per heap, (total, free, largest_free_block, min_free), derived from the
    VM's GC heap (the sim's only heap: -X heapsize)."""
    free = gc.mem_free()
    total = free + gc.mem_alloc()
    if _min_free[0] is None or free < _min_free[0]:
        _min_free[0] = free
    if capabilities & HEAP_DATA:
        # the largest free block is not exposed by gc; estimate it as half of the free heap
        return [(total, free, free // 2, _min_free[0])]
    if capabilities & HEAP_EXEC:
        return [(32768, 16384, 16384, 16384)]
    return []


def raw_temperature():
    # degrees Fahrenheit, like the ESP32's internal sensor (about 50 C)
    return 122 + (time.ticks_ms() // 60000) % 3


def wake_on_touch(wake):
    pass


def wake_on_ext0(pin, level):
    pass


def wake_on_ext1(pins, level):
    pass


def gpio_deep_sleep_hold(enable):
    pass


class NVS:
    """Minimal NVS: one JSON file per namespace in $ESP32SIM/nvs_<namespace>.json.
    Values are written to the file on commit(), as the real NVS."""

    def __init__(self, namespace):
        self._p = _s.path("nvs_%s.json" % namespace)
        self._d = _s.read_json(self._p, {}) or {}

    def _get(self, key):
        if key not in self._d:
            raise OSError(-4354)  # ESP_ERR_NVS_NOT_FOUND
        return self._d[key]

    def set_i32(self, key, value):
        self._d[key] = ["i", int(value)]

    def get_i32(self, key):
        v = self._get(key)
        if v[0] != "i":
            raise OSError(-4354)
        return v[1]

    def set_blob(self, key, value):
        self._d[key] = ["b", bytes(value).hex()]

    def get_blob(self, key, buffer):
        v = self._get(key)
        if v[0] != "b":
            raise OSError(-4354)
        data = bytes.fromhex(v[1])
        n = min(len(buffer), len(data))
        buffer[:n] = data[:n]
        return len(data)

    def erase_key(self, key):
        self._get(key)
        del self._d[key]

    def commit(self):
        _s.write_json(self._p, self._d)
