"""LOG lines waiting for the servers: sent at most one every LOG_EVERY_MS on average (bursts of
LOG_QUEUE), and under a flood coalesced into counts, never lost without a trace: a repeat counts
on its queued twin (`<text>_x3`), a routine line joins the newest routine entry (`_+5_more`),
and an owner's action (a command run) displaces routine lines instead of waiting behind them."""
import time

LOG_QUEUE = 8
LOG_EVERY_MS = 2000
MAX_FIELD = 64


class LogQueue:
    def __init__(self):
        self.q = []  # [text, times, others coalesced into it, owner]
        self.tokens = LOG_QUEUE * LOG_EVERY_MS
        self.at = time.ticks_ms()
        self.coalesced = 0
        self.dropped = 0

    def add(self, text, owner=False):
        q = self.q
        for e in q:
            if e[0] == text:
                e[1] += 1
                self.coalesced += 1
                return
        if len(q) >= LOG_QUEUE:
            r = [k for k in range(len(q)) if not q[k][3]]
            if not r:  # only owner actions queued: they stay
                self.dropped += 1
                if not owner:
                    return
                q.pop(0)
            elif not owner:
                q[r[-1]][2] += 1
                self.coalesced += 1
                return
            else:
                gone = q.pop(r[-1])
                self.coalesced += 1
                if len(r) > 1:
                    q[r[-2]][2] += gone[1] + gone[2]
        q.append([text, 1, 0, owner])

    def due(self):
        """The next text the budget allows now, or None."""
        if not self.q:
            return None
        now = time.ticks_ms()
        d = time.ticks_diff(now, self.at)
        self.at = now
        self.tokens = min(self.tokens + d, LOG_QUEUE * LOG_EVERY_MS)
        if self.tokens < LOG_EVERY_MS:
            return None
        self.tokens -= LOG_EVERY_MS
        text, times, others, _ = self.q.pop(0)
        tail = ('_x%d' % times if times > 1 else '') + ('_+%d_more' % others if others else '')
        return text[:MAX_FIELD - len(tail)] + tail
