# Runs first on every boot. Kept minimal: a fault here would keep the board from starting main.py.
import gc

gc.collect()
