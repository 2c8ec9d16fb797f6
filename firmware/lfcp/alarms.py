"""Pending alarms: one MOAL per server, retransmitted with backoff until that server
acknowledges THAT alarm or lfcp.alarm_deadline_s passes.

What acknowledges an alarm (docs/protocol.md, "Alarms"): authenticated, any reply bound to the
seq of one of its MOAL copies; plain, an `ACK,MOAL` naming its id (or `0` for the oldest alarm
that server has not acknowledged). Nothing else: an ACK of a LOG or a heartbeat never counts.
"""
import time

COPIES = 6  # seqs remembered per server and alarm: a late answer to an earlier copy still counts
ALARMS = 4  # alarms being retransmitted at once


class PendingAlarm:
    def __init__(self, aid, text, n, now):
        self.id = aid
        self.text = text
        self.start = now
        self.acked = [False] * n
        self.seqs = [[] for _ in range(n)]
        self.due = [now] * n
        self.delay = [1000] * n

    def sent(self, i, seq):
        s = self.seqs[i]
        s.append(seq)
        if len(s) > COPIES:
            s.pop(0)


class Alarms:
    def __init__(self, log, servers, deadline_s, send):
        self.log = log
        self.servers = servers
        self.deadline = deadline_s * 1000
        self.send = send  # fn(server, typ, params) -> seq (1 when plain), 0 when not sent
        self.pending = []
        self.acknowledged = 0
        self.lost = 0

    def add(self, aid, text, now):
        a = PendingAlarm(aid, text, len(self.servers), now)
        self.pending.append(a)
        if len(self.pending) > ALARMS:
            old = self.pending.pop(0)
            self.lost += 1
            self.log.warn('lfcp: alarm', old.id, 'dropped: too many alarms pending')
        self.tick(now)
        return a

    def answered(self, i, seq):
        """Server i answered the authenticated datagram seq: the alarm that copy carried is in."""
        for a in self.pending:
            if not a.acked[i] and seq in a.seqs[i]:
                a.acked[i] = True
                return True
        return False

    def plain_ack(self, i, aid):
        """A plain `ACK,MOAL` from server i, for alarm aid ('0': its oldest unacknowledged)."""
        for a in self.pending:
            if not a.acked[i] and a.seqs[i] and (aid == '0' or aid == str(a.id)):
                a.acked[i] = True
                return True
        return False

    def tick(self, now):
        for a in list(self.pending):
            if False not in a.acked:
                self.pending.remove(a)
                self.acknowledged += 1
                self.log('lfcp: alarm', a.id, 'acknowledged')
                continue
            if time.ticks_diff(now, a.start) >= self.deadline:
                self.pending.remove(a)
                self.lost += 1
                lost = [self.servers[i].spec for i in range(len(a.acked)) if not a.acked[i]]
                self.log.warn('lfcp: alarm', a.id, 'not acknowledged by', ' '.join(lost))
                continue
            for i in range(len(a.acked)):
                if a.acked[i] or time.ticks_diff(now, a.due[i]) < 0:
                    continue
                seq = self.send(self.servers[i], 'MOAL', (a.text, 0, 0, 0, 0, a.id))
                if seq:
                    a.sent(i, seq)
                a.due[i] = time.ticks_add(now, a.delay[i])
                a.delay[i] = min(a.delay[i] * 2, 30000)
