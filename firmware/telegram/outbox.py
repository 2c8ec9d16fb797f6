"""What waits to go to Telegram: a bounded priority queue (alarm photos, then replies, then
requested photos).

The bound counts photos; replies and clips have their own small bounds. A full queue drops the oldest
requested photo first; an alarm photo is only dropped for another one when at least alarm_slots
alarm photos are already waiting (else the bound stretches for it): evidence goes before comfort.
"""
import asyncio

ALARM, MESSAGE, REQUEST, CLIP = 0, 1, 2, 3  # also the priority: lower goes first
KINDS = ('alarm photo', 'message', 'requested photo', 'alarm clip')
MAX_MESSAGES = 8
MAX_CLIPS = 4  # clips wait on the card, not in the heap; the oldest goes first when more come


class Item:
    """One outgoing call. chats None: every configured chat, resolved at the first attempt."""

    def __init__(self, kind, chats=None, text=None, jpeg=None, when=None, reason=None, score=None):
        self.kind = kind
        self.chats = chats
        self.text = text
        self.jpeg = jpeg
        self.when = when
        self.reason = reason
        self.score = score
        self.caption = None  # a clip's caption (a photo's is made when it goes)
        self.file_id = None  # after the first upload, later chats get the photo by reference


class Outbox:
    def __init__(self, log, bound, alarm_slots):
        self.log = log
        self.bound = bound
        self.alarm_slots = alarm_slots
        self.queue = []
        self.dropped = 0
        self.wake = asyncio.Event()

    def __len__(self):
        return len(self.queue)

    def count(self, kind):
        return len([i for i in self.queue if i.kind == kind])

    def _oldest(self, kind):
        for i in self.queue:
            if i.kind == kind:
                return i
        return None

    def push(self, item):
        """Queue `item` within the bounds; False if it was the one dropped."""
        q = self.queue
        if item.kind == MESSAGE:
            if self.count(MESSAGE) >= MAX_MESSAGES:
                self.drop(self._oldest(MESSAGE), 'too many replies pending')
        elif item.kind == CLIP:
            if self.count(CLIP) >= MAX_CLIPS:
                self.drop(self._oldest(CLIP), 'too many clips pending')
        elif len(q) - self.count(MESSAGE) - self.count(CLIP) >= self.bound:
            victim = self._oldest(REQUEST)
            if victim is None:
                if item.kind == REQUEST:
                    self.drop(item, 'queue full of alarm photos')
                    return False
                if self.count(ALARM) >= self.alarm_slots:
                    victim = self._oldest(ALARM)
            if victim is not None:
                self.drop(victim, 'queue full (%d)' % self.bound)
        q.append(item)
        self.wake.set()
        return True

    def drop(self, item, why):
        if item in self.queue:
            self.queue.remove(item)
        self.dropped += 1
        self.log.warn('telegram: dropped a', KINDS[item.kind], '-', why)

    def take(self):
        """The first item of the highest priority, removed from the queue; None if empty."""
        best = None
        for i in self.queue:
            if best is None or i.kind < best.kind:
                best = i
        if best is not None:
            self.queue.remove(best)
        return best

    def put_back(self, item):
        """A failed item goes first again within its priority."""
        self.queue.insert(0, item)
