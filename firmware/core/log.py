"""Console log with a ring buffer for the admin page, and a second ring for the evidence.

Owner actions (commands) and alarms are also kept in `evidence`, a ring of their own that nothing
else writes to: a flood of garbage requests or failing peers can push them out of the main ring,
never out of this one.

Secrets (tokens, keys, passwords) are registered once and masked in every line before it is
printed, kept or handed to a sink (LFCP LOG lines), so no later call site can leak them.
"""
import time


class Log:
    def __init__(self, lines=50, evidence=20):
        self.max = lines
        self.lines = []
        self.evidence = []
        self.evidence_max = evidence
        self.sinks = []
        self._secrets = []

    def secret(self, value):
        """Mask `value` wherever it appears from now on (empty and short values are ignored)."""
        if value and len(value) >= 4 and value not in self._secrets:
            self._secrets.append(value)
            # longest first: a secret that contains another is masked whole, not in part
            self._secrets.sort(key=len, reverse=True)

    def redact(self, text):
        for s in self._secrets:
            if s in text:
                text = text.replace(s, '***')
        return text

    def __call__(self, *parts):
        self.write('I', parts)

    def warn(self, *parts):
        self.write('W', parts)

    def error(self, *parts):
        self.write('E', parts)

    def note(self, *parts, level='I'):
        """An owner action or an alarm: logged as usual and kept in the evidence ring."""
        self.write(level, parts)
        line = self.lines[-1]
        self.evidence.append(line)
        if len(self.evidence) > self.evidence_max:
            self.evidence.pop(0)

    def write(self, level, parts):
        line = self.redact(' '.join(str(p) for p in parts))
        print(level, line)
        self.lines.append((time.time(), level, line))
        if len(self.lines) > self.max:
            self.lines.pop(0)
        for sink in self.sinks:
            try:
                sink(level, line)
            except Exception as e:  # a broken sink must not break logging
                print('E log sink:', self.redact(str(e)))

    def tail(self, n=20):
        return self.lines[-n:]
