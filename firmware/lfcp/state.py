"""lfcp.json and the sequence numbers: the device's seq (a high-water mark reserved in blocks, so
flash is written once per SEQ_BLOCK messages), the last direct seq accepted and its future
window, the command ids run per origin, and each server's plain-command memory. A broken file is
moved aside and LFCP starts fresh, saying so: never a dead feature."""
import os
import time

from firmware.core import clock, store

SEQ_BLOCK = 1000
DONE = 8  # executed command ids remembered per origin
DAY_MS = 86400000
YEAR_MS = 365 * DAY_MS
MS_2100 = 4102444800000  # ms since 1970: the direct-seq ceiling while the clock is unknown
MAX_ID = 128


def clock_ms():
    """Milliseconds since 1970 when the clock has been set (NTP), else None."""
    t = clock.unix()
    return None if t is None else t * 1000


class State:
    def __init__(self, path, log, servers):
        self.path = path
        self.log = log
        self.servers = servers
        self.seq = 0
        self.reserved = 0
        self.direct_hw = 0
        self.done = {}
        self.quiet = False  # True inside the LOG sink: a failing save is not logged from there
        self.loaded = False

    def load(self):
        """Once, before the first seq is used (an alarm may come before the service runs)."""
        if self.loaded:
            return
        self.loaded = True
        try:
            st = store.load(self.path, {})
            bad = _bad(st)
        except ValueError as e:
            st, bad = {}, str(e)
        if bad:
            try:
                os.rename(self.path, self.path + '.bad')
            except OSError:
                pass
            self.log.error('lfcp: %s is broken (%s): moved to %s.bad, starting from seq 0;'
                           ' servers that knew this device must forget it' % (
                               self.path, bad, self.path))
            st = {}
        self.seq = st.get('seq', 0)
        self.direct_hw = st.get('direct', 0)
        if self.direct_hw > self._top(0):  # a mark no tool can pass (an older firmware's)
            self.log.warn('lfcp: stored direct seq is in the far future: forgotten')
            self.direct_hw = 0
        keep = [s.spec for s in self.servers] + ['direct']
        done = st.get('done', {})
        self.done = dict((k, done[k]) for k in done if k in keep)
        plain = st.get('plain', {})
        now = time.ticks_ms()
        for s in self.servers:  # not yet seen moved on: a re-delivery after a reboot is a repeat
            s.ran = [[k, now, False] for k in plain.get(s.spec, ())]
        self._reserve()

    def save(self):
        try:
            store.save(self.path, {'seq': self.reserved, 'direct': self.direct_hw,
                                   'done': self.done,
                                   'plain': dict((s.spec, [e[0] for e in s.ran])
                                                 for s in self.servers if s.ran)})
        except OSError as e:
            if not self.quiet:
                self.log.error('lfcp: cannot save', self.path, e)

    def _reserve(self):
        self.reserved = self.seq + SEQ_BLOCK
        self.save()

    def next_seq(self):
        self.load()
        self.seq += 1
        if self.seq >= self.reserved:
            self._reserve()
        return self.seq

    def ran(self, who, cid):
        """Whether command id cid from origin who has run; else it is noted as run."""
        ids = self.done.setdefault(who, [])
        if cid in ids:
            return True
        ids.append(cid)
        if len(ids) > DONE:
            ids.pop(0)
        return False

    def direct(self, seq, take=False):
        """None when seq is a fresh direct seq (stored when take), else 'replay' or 'future':
        above all the device sent and the last direct one, at most a day ahead of the clock
        (without a clock, a year above the last one)."""
        if seq <= self.direct_hw or seq <= self.reserved:
            return 'replay'
        if seq > self._top(self.direct_hw):
            return 'future'
        if take:
            self.direct_hw = seq
        return None

    @staticmethod
    def _top(last):
        now = clock_ms()
        return now + DAY_MS if now else last + YEAR_MS if last else MS_2100


def _bad(st):
    """Why a loaded lfcp.json cannot be used, or None."""
    if not isinstance(st, dict):
        return 'not an object'
    for k in ('seq', 'direct'):
        v = st.get(k, 0)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 10 ** 19:
            return '%s: not a seq' % k
    for name in ('done', 'plain'):
        d = st.get(name, {})
        if not isinstance(d, dict):
            return name + ': not an object'
        for k in d:
            ids = d[k]
            if not isinstance(ids, list) or len(ids) > DONE:
                return name + ': bad list'
            for x in ids:
                if not isinstance(x, str) or len(x) > MAX_ID:
                    return name + ': bad entry'
    return None
