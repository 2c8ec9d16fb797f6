"""The first boot of a new version is a trial: it must report healthy within update.confirm_s.

boot.py starts the trial (ota.json 'tries': 1) and a watchdog, so a version that crashes before
its supervisor runs still resets the board. This task then watches the health of the running
firmware (every critical task making progress, the servers listening, the uplink or the access
point up): healthy for a few seconds in a row confirms the version (ota.json 'trial' false);
still unhealthy at the deadline resets the board. Any reset during the trial (this one, the
watchdog's, a crash loop's) makes boot.py start the previous version, which reports the rollback
(`report()`) once, in the log (so over LFCP), to Telegram and in /status.
"""
import asyncio
import time

from firmware.core import store

STATE = 'ota.json'
HEALTHY_FOR_S = 10     # healthy this long in a row confirms the version
PROGRESS_S = 5         # a critical task that has not beaten for this long makes no progress


def state():
    """ota.json: {'active': slot, 'previous': slot, 'trial', 'tries', 'version', ...}."""
    try:
        s = store.load(STATE)
    except ValueError:
        s = None
    return s if isinstance(s, dict) else {'active': ''}


def report(st, log, notify):
    """At boot, once: say that the last update was rolled back (log, so LFCP too, and Telegram)."""
    # the first 64 characters are what an LFCP LOG carries
    text = 'update: %s rolled back (not healthy within %d s): the previous version runs again' % (
        st.get('version'), st.get('confirm_s', 0))
    log.error(text)
    if notify:
        try:
            notify(text)
        except Exception as e:
            log.error('update: cannot send the rollback message:', repr(e))
    st['reported'] = True
    try:
        store.save(STATE, st)
    except OSError as e:
        log.error('update: cannot write', STATE, repr(e))


class Trial:
    def __init__(self, log, machine, sup, listeners, wifi, confirm_s):
        self.log = log
        self.machine = machine
        self.sup = sup
        self.listeners = listeners      # the servers' listeners, as they start
        self.wifi = wifi
        self.confirm_s = confirm_s
        self.feed_after = not sup.watchdog_s    # no supervisor watchdog: keep boot.py's fed
        self.problem = None
        self.confirmed = False

    def healthy(self):
        """None when this version is healthy, else what is wrong."""
        for name, t in self.sup.status().items():
            if t['critical'] and (not t['running'] or t.get('beat_age_s', 0) > PROGRESS_S):
                return 'task %s makes no progress' % name
        if len(self.listeners) < 3:
            return 'servers not listening yet'
        if self.wifi.state != 'connected' and not self.wifi.ap_on:
            return 'neither uplink nor access point is up'
        return None

    async def run(self):
        # with the supervisor's watchdog on, its WDT() has taken over boot.py's; without, this
        # one is boot.py's, fed once the version is confirmed
        wdt = self.machine.WDT(timeout=1000 * max(self.confirm_s, 10)) if self.feed_after else None
        start = time.ticks_ms()
        good_since = None
        while True:
            self.problem = self.healthy()
            now = time.ticks_ms()
            if self.problem is None:
                if good_since is None:
                    good_since = now
                if time.ticks_diff(now, good_since) >= HEALTHY_FOR_S * 1000:
                    break
            else:
                good_since = None
            if time.ticks_diff(now, start) > self.confirm_s * 1000:
                self.log.error('update: not healthy after', self.confirm_s, 's (' +
                               str(self.problem) + '): restarting into the previous version')
                self.machine.reset()
            await asyncio.sleep_ms(500)
        st = state()
        st['trial'] = False
        store.save(STATE, st)
        self.confirmed = True
        self.log('update: version', st.get('version'), 'reports healthy: confirmed')
        while wdt:
            wdt.feed()
            await asyncio.sleep_ms(250 * max(self.confirm_s, 10))
