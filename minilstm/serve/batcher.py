"""Dynamic batching: one queue of sentences, one decoder thread.

Request handlers (on the event loop) put their sentences into the queue and await a future. The decoder thread
takes up to ``max_batch`` sentences at once, or, when fewer are waiting, what has arrived by the time the oldest has
waited ``max_delay`` seconds; decodes them as one batch; and hands each request its answers once all of its
sentences are done (a request's sentences may be split over several batches).

A wait that gathered nobody is not paid again: when the previous batch held one sentence, the next is taken at
once, and waiting resumes as soon as a batch holds more than one (sentences that arrived while the last batch
decoded). After a batch of n > 1 sentences, the decoder waits until n are queued again, or until ``max_delay`` has
passed since it became free (or since the oldest arrived, if later), whichever comes first. Why: the clients whose
answers a batch just sent come back within a few milliseconds; taking the first of them alone the moment the
decoder is free (its wait, counted from its arrival during the decode, is already over) made batches alternate
between 1 and n (measured, 16 clients and a decode step of ~13 ms: 164 batches of 1 and 163 of ~16, 261
sentences/s). Why: one client alone gains nothing from the delay and paid it on every request (measured on 2 cores:
p50 12.2 ms against 5.6 ms with no delay), while under load the sentences that arrive during a decode form the next
batch anyway (64 clients: 817 sentences/s with the delay, 791 without). The model is only ever called from
this one thread: never from the event loop, and never from two threads at once (Numba's workqueue threading layer
aborts when compiled parallel code is entered from two threads).
"""

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("minilstm.serve")


class QueueFull(Exception):
    """More sentences than ``max_queue`` would be waiting."""


class Closed(Exception):
    """The batcher is stopping and takes no more work."""


@dataclass
class Job:
    """One request's sentences: answers by position, delivered to ``future`` on ``loop`` when all are in."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    results: list
    remaining: int
    cancelled: bool = False  # the client went away: its sentences still queued are skipped
    failed: bool = False

    def cancel(self):
        self.cancelled = True

    def _settle(self, result=None, error=None):
        def settle():
            if not self.future.done():
                if error is None:
                    self.future.set_result(result)
                else:
                    self.future.set_exception(error)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass

    def deliver(self, index: int, result, error: BaseException | None):
        """Called on the decoder thread with the answer for sentence ``index`` (or the error that decoding it
        raised: then the whole request fails with it, once)."""
        if self.failed:
            return
        if error is not None:
            self.failed = True
            self._settle(error=error)
            return
        self.results[index] = result
        self.remaining -= 1
        if self.remaining == 0:
            self._settle(result=self.results)


@dataclass
class Item:
    job: Job
    index: int
    text: str
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """``decode(texts) -> answers`` (one per text, in order) run on one thread over batches of queued texts.

    ``metrics`` (optional) has ``batch_size``, ``queue_wait``, ``decode_seconds`` (histograms), ``queue_depth``
    (gauge) and ``sentences``, ``skipped`` (counters), as prometheus_client objects."""

    def __init__(self, decode, max_batch: int, max_delay: float, max_queue: int, metrics=None):
        self._decode = decode
        self.max_batch, self.max_delay, self.max_queue = max_batch, max_delay, max_queue
        self._metrics = metrics
        self._items: collections.deque[Item] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False  # stop(): decode what is queued, take nothing new, end the thread
        self._hurry = False  # flush(): stop waiting for more sentences before decoding
        self._last_batch = 0  # sentences in the previous batch: 1 means its wait gathered nobody (module doc)
        self._thread = None

    # -- the event loop's side ---------------------------------------------------------------------------------

    def submit(self, texts: list[str]) -> Job:
        """Queue ``texts`` (at least one); the returned job's future gets the list of answers."""
        loop = asyncio.get_running_loop()
        job = Job(loop, loop.create_future(), [None] * len(texts), len(texts))
        with self._cond:
            if self._closing:
                raise Closed()
            if len(self._items) + len(texts) > self.max_queue:
                raise QueueFull(len(self._items))
            now = time.monotonic()
            self._items.extend(Item(job, k, text, now) for k, text in enumerate(texts))
            self._set_depth()
            self._cond.notify()
        return job

    @property
    def depth(self) -> int:
        return len(self._items)

    # -- lifetime ------------------------------------------------------------------------------------------------

    def start(self, warmup=None):
        """Start the decoder thread; ``warmup()`` runs on it first (compiling the kernels), and this returns once
        it has, raising what it raised."""
        ready = threading.Event()
        failure = []

        def run():
            try:
                if warmup is not None:
                    warmup()
            except BaseException as e:  # noqa: BLE001 - handed to the starting thread
                failure.append(e)
                return
            finally:
                ready.set()
            self._run()

        self._thread = threading.Thread(target=run, name="minilstm-decoder", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def flush(self):
        """Decode what is queued now, without waiting for more (the server is stopping)."""
        with self._cond:
            self._hurry = True
            self._cond.notify()

    def stop(self, timeout: float | None = None):
        """Decode everything queued, answer it, then end the decoder thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the decoder thread ---------------------------------------------------------------------------------------

    def _set_depth(self):
        if self._metrics is not None:
            self._metrics.queue_depth.set(len(self._items))

    def _take(self) -> list[Item] | None:
        """The next batch (None: stopped and nothing left)."""
        free = time.monotonic()  # when the decoder became free (module doc: the wait counts from here at the latest)
        with self._cond:
            while not self._items:
                if self._closing:
                    return None
                self._cond.wait()
            if self._last_batch == 1:  # the last wait gathered nobody: take what is there
                deadline, target = 0.0, self.max_batch
            elif self._last_batch == 0:  # the first batch: up to max_batch, or once the oldest has waited max_delay
                deadline, target = self._items[0].enqueued + self.max_delay, self.max_batch
            else:
                deadline = max(self._items[0].enqueued, free) + self.max_delay
                target = min(self.max_batch, self._last_batch)
            while len(self._items) < target and not (self._closing or self._hurry):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = [self._items.popleft() for _ in range(min(self.max_batch, len(self._items)))]
            self._last_batch = len(batch)
            self._set_depth()
            return batch

    def _run(self):
        while (batch := self._take()) is not None:
            live = [item for item in batch if not (item.job.cancelled or item.job.failed)]
            if self._metrics is not None and len(live) < len(batch):
                self._metrics.skipped.inc(len(batch) - len(live))
            if live:
                self._decode_batch(live)

    def _decode_batch(self, batch: list[Item]):
        started = time.monotonic()
        texts = [item.text for item in batch]
        errors = [None] * len(batch)
        try:
            answers = self._decode(texts)
        except Exception:  # noqa: BLE001 - one bad text must not fail the others: decode them one by one
            log.exception("decoding a batch of %d failed; decoding its sentences one by one", len(batch))
            answers = [None] * len(batch)
            for k, text in enumerate(texts):
                try:
                    answers[k] = self._decode([text])[0]
                except Exception as e:  # noqa: BLE001 - this sentence's request gets the error
                    errors[k] = e
        if self._metrics is not None:
            m = self._metrics
            m.batch_size.observe(len(batch))
            m.decode_seconds.observe(time.monotonic() - started)
            m.sentences.inc(len(batch))
            for item in batch:
                m.queue_wait.observe(started - item.enqueued)
        for item, answer, error in zip(batch, answers, errors, strict=True):
            item.job.deliver(item.index, answer, error)
