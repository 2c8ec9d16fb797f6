"""Where things are, for the tests and benchmarks: the repository, the VM, the board's module path."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MICROPYTHON = os.path.join(ROOT, '.venv', 'bin', 'micropython')
# What a firmware script on the VM imports from: the stand-ins for the ESP32 modules, microdot,
# then the repository (firmware/); '.frozen' first as on a board.
MICROPYPATH = ':'.join(['.frozen', os.path.join(ROOT, 'tools', 'sim', 'board'),
                        os.path.join(ROOT, 'lib'), ROOT])
