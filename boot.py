# Runs first on every boot and is never replaced by an update (it is not in a bundle): it picks
# the firmware slot to run from ota.json (written by firmware/ota/) and puts it first on sys.path.
# Kept tiny: any fault here falls back to the firmware at the flash root, so the board still starts.
import gc
import sys


def _slot():
    try:
        import json
        import os
        with open('ota.json') as f:
            s = json.load(f)
        slot = s['active']
        if s.get('trial'):
            if s.get('tries'):
                # the new version had its boot and never reported healthy: back to the previous
                s['rolled_back'] = slot
                slot = s['active'] = s['previous']
                s['trial'] = False
            else:
                s['tries'] = 1
            with open('ota.json.tmp', 'w') as f:
                json.dump(s, f)
            os.rename('ota.json.tmp', 'ota.json')
            if s['trial']:
                # a new version that crashes before its supervisor runs still resets the board
                import machine
                machine.WDT(timeout=1000 * s.get('confirm_s', 120))
        if slot:
            os.stat(slot + '/firmware')
        return slot
    except Exception:
        return ''


_s = _slot()
if _s:
    sys.path.insert(0, _s + '/lib')
    sys.path.insert(0, _s)
del _s, _slot
gc.collect()
