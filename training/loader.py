"""Data loaders that survive their workers: paddle.io.DataLoader with sharding, read-ahead
and recovery from a worker process that died (a decoder that segfaulted, or was ended by
its hard deadline, reader/deadline.py).

How a dead worker is recovered: every worker writes which item it is reading into memory
shared with the main process (TrackedDataset).  When a worker dies, Paddle reports it in
one of several ways, from a SIGCHLD handler that raises wherever the main thread happens
to be (`(Fatal) DataLoader process (pid N) exited is killed by signal: ...`), or from the
loader (`Blocking queue is killed ...`).  WorkerDeaths turns the first into a record
instead of an exception, and resilient_batches checks for deaths between batches only,
so a death never surfaces in the middle of a training step.  The item the dead worker
was reading is then skipped for the rest of the run (counted as failed, named in the
log) and the workers restart at the first batch not yet delivered: no other video is lost.

How iterators end (close_iterator): on the main thread, before any new worker starts,
the old workers are ended and reaped, the reader thread joined, the queues closed, the
shared-memory segments the workers left unlinked.  Workers also die with their parent
however it dies, SIGKILL included (utils.parent_watch.die_with_parent, their worker_init_fn).
"""
import contextlib
import glob
import itertools
import logging
import multiprocessing
import os
import re
import signal
import threading
import time

import numpy as np
import paddle
from paddle.io.dataloader.worker import _ResumeIteration
from paddle.io.multiprocess_utils import _set_SIGCHLD_handler

from reader import collate
from utils.config_utils import ConfigError
from utils.env import available_cpus
from utils.parent_watch import die_with_parent, ended

logger = logging.getLogger(__name__)

MAX_WORKERS = 64  # slots of TrackedDataset; more workers than this are not tracked
READER_POLL_S = 0.25  # see build_loader


class LoaderError(RuntimeError):
    """The workers died too often; one-line message."""


class ShardSampler(paddle.io.Sampler):
    """Indices rank, rank+world, ...: every video exactly once over all ranks, no padding
    (DistributedBatchSampler pads with repeats, which would bias evaluation)."""

    def __init__(self, size, rank=0, world=1):
        super().__init__()
        self.indices = list(range(rank, size, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class ResumableBatches(paddle.io.BatchSampler):
    """Wraps a batch sampler so an epoch can start after its first `skip` batches (resume
    in the middle of an epoch, restart after a worker died) without decoding them."""

    def __init__(self, inner):  # no super().__init__: everything is delegated to `inner`
        self.inner, self.skip, self.epoch = inner, 0, None

    def __iter__(self):
        if self.epoch is not None:  # DistributedBatchSampler moves to the next epoch's
            self.inner.set_epoch(self.epoch)  # order on every pass: a restart repeats it
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self):
        return len(self.inner)

    @property
    def batch_size(self):
        return getattr(self.inner, 'batch_size', 1)

    def set_epoch(self, epoch):
        if hasattr(self.inner, 'set_epoch'):
            self.epoch = epoch


class TrackedDataset(paddle.io.Dataset):
    """`inner` with the item each worker is reading kept in shared memory, as (pid, item)
    per worker id, and items known to kill their worker (`bad`) returned as failed (None,
    which `collate` counts) without being read again.  Attributes are the inner dataset's."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.bad = inner, set()
        # plain shared memory, inherited by the forked workers; -1: reading nothing
        self.slots = multiprocessing.RawArray('q', [-1] * (2 * MAX_WORKERS))

    def __len__(self):
        return len(self.inner)

    def __getattr__(self, name):  # set_epoch, average, num_views, buf_size, items, ...
        if name in ('inner', 'bad', 'slots'):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __getitem__(self, index):
        if index in self.bad:
            return None
        info = paddle.io.get_worker_info()
        slot = 2 * info.id if info is not None and info.id < MAX_WORKERS else None
        if slot is not None:
            self.slots[slot], self.slots[slot + 1] = os.getpid(), index
        try:
            return self.inner[index]
        finally:
            if slot is not None:
                self.slots[slot + 1] = -1

    def forget(self):
        """No worker is reading anything: before workers start (the slots of the dead ones
        would name their items again)."""
        self.slots[:] = [-1] * len(self.slots)

    def reading(self):
        """{worker pid: item it is reading} (items being read right now)."""
        s = self.slots
        return {s[i]: s[i + 1] for i in range(0, len(s), 2) if s[i] > 0 and s[i + 1] >= 0}

    def name(self, index):
        items = getattr(self.inner, 'items', None)
        return str(items[index][0]) if items is not None else f"item {index}"


def prefetch_batches(buf_size, batch_size, workers, views=1, most=8):
    """Batches each worker may read ahead: the config's buf_size (clips buffered between
    reader and model, as in the original) shared out, between 2 (Paddle's default) and
    `most`.  The loader hands batches over in order, so one slow video (a long or large
    file) stalls the others once they are this far ahead (bench/training_speed.py's figures:
    docs/training.md#the-loaders-read-ahead)."""
    if not buf_size or workers <= 0:
        return 2
    return max(2, min(most, int(buf_size) // (batch_size * workers * max(1, views))))


def build_loader(dataset, batch_size, num_workers, rank=0, world=1, shuffle=False):
    """Training (shuffle=True): a DistributedBatchSampler, each rank its own shard.
    Evaluation: each rank a disjoint shard, the last partial batch kept.  Workers read
    ahead as the dataset's buf_size, shared among the ranks, allows (prefetch_batches);
    with workers, the dataset is tracked so a worker's death can be recovered from."""
    workers = max(0, min(num_workers, available_cpus()))
    if shuffle:
        sampler = paddle.io.DistributedBatchSampler(dataset, batch_size=batch_size,
                                                    num_replicas=world, rank=rank,
                                                    shuffle=True, drop_last=False)
    else:
        sampler = paddle.io.BatchSampler(sampler=ShardSampler(len(dataset), rank, world),
                                         batch_size=batch_size, drop_last=False)
    # the original's buffer fed every device of the machine: one share per rank
    prefetch = prefetch_batches((getattr(dataset, 'buf_size', 0) or 0) // max(1, world),
                                batch_size, workers, getattr(dataset, 'num_views', 1))
    if workers > 0:
        dataset = TrackedDataset(dataset)
    # timeout: how often Paddle's reader thread looks up from the workers' queue to see
    # whether it was told to stop or a worker died (its default, 5 s, kept it alive that
    # long after every epoch and delayed noticing a dead worker by as much)
    return paddle.io.DataLoader(dataset, batch_sampler=ResumableBatches(sampler),
                                num_workers=workers, collate_fn=collate,
                                use_shared_memory=workers > 0, prefetch_factor=prefetch,
                                timeout=READER_POLL_S, worker_init_fn=die_with_parent)


_DEATH = re.compile(r'killed by signal|exited unexpectedly|exit unexpectedly|'
                    r'Blocking queue is killed')
_PID = re.compile(r'pid\S*\s+(\d+)')


class WorkerDeaths:
    """While installed (main thread only), Paddle's SIGCHLD handler, which raises in
    whatever the main thread is doing when a worker dies, has its error recorded instead:
    `pids` and `messages` of the workers that died."""

    def __init__(self):
        self.pids, self.messages, self._previous, self._previous_hook = set(), [], None, None

    def install(self):
        if self._previous is not None or \
                threading.current_thread() is not threading.main_thread():
            return self
        _set_SIGCHLD_handler()  # Paddle's, as its first iterator would (once per process)
        previous = signal.getsignal(signal.SIGCHLD)
        if not callable(previous):
            return self

        def handler(signum, frame):
            try:
                previous(signum, frame)
            except (SystemError, RuntimeError) as e:
                self.record(str(e))
        self._previous = previous
        signal.signal(signal.SIGCHLD, handler)
        self._previous_hook = threading.excepthook
        threading.excepthook = self._thread_error
        return self

    def _thread_error(self, args):
        """The loader's reader thread fails when a worker dies under a batch it had
        announced (its shared memory is gone): one line, the death is handled."""
        if '_thread_loop' in getattr(args.thread, 'name', ''):
            logger.warning("data loader reader thread: %s", str(args.exc_value).split('\n')[0])
            self.record(str(args.exc_value))
            return
        self._previous_hook(args)

    def uninstall(self):
        if self._previous is not None:
            signal.signal(signal.SIGCHLD, self._previous)
            threading.excepthook = self._previous_hook
            self._previous = None

    def record(self, text):
        # Paddle's messages go on with '[Hint: ...]' lines and ' (at file:line)': the first
        # line is the reason, so the warnings and a LoaderError stay one line
        self.messages.append(text.strip().split('\n')[0].split(' (at ')[0].strip())
        self.pids.update(int(p) for p in _PID.findall(text))

    def clear(self):
        self.pids.clear()
        self.messages.clear()

    def __bool__(self):
        return bool(self.messages)


def resilient_batches(loader, start=0, max_restarts=10):
    """Yield (index, batch) from batch `start` on.  When a worker process dies, the item
    it was reading is skipped from then on (counted as failed) and the workers restart at
    the first batch not yet yielded.  When the item cannot be told (an untracked loader),
    the workers restart at that batch once more, and if they die again there the batch
    is given up: yielded with no videos, all of them counted as failed.  More than
    `max_restarts` restarts is a LoaderError."""
    pos, restarts, sampler, unknown_at, it = start, 0, loader.batch_sampler, None, None
    tracked = loader.dataset if isinstance(loader.dataset, TrackedDataset) else None
    deaths = WorkerDeaths()
    try:
        while pos < len(loader):
            sampler.skip = pos
            if tracked is not None:
                tracked.forget()
            try:
                deaths.install()  # before iter(): a worker may die while it starts them
                it = iter(loader)
                while not deaths:
                    try:
                        batch = next(it)
                    except StopIteration:
                        return
                    yield pos, batch  # a batch made is whole, even if a worker died since
                    pos += 1
            except (SystemError, RuntimeError) as e:  # how the loader reports a death
                if not _DEATH.search(str(e)):
                    raise
                deaths.record(str(e))
            finally:
                sampler.skip = 0
            culprits = _culprits(tracked, deaths)
            close_iterator(it)  # every old worker is gone before a new one starts
            it = None
            reason = deaths.messages[0] if deaths.messages else 'a worker died'
            deaths.clear()
            restarts += 1
            if restarts > max_restarts:
                raise LoaderError(f"data loader workers died {restarts} times; stopping "
                                  f"(last: {reason})")
            if culprits:
                for item in sorted(culprits):
                    logger.warning("skipping video: %s: its decoder killed the reader process "
                                   "(%s); counted as failed", tracked.name(item), reason)
                tracked.bad.update(culprits)
                logger.warning("restarting the data loader workers at batch %d", pos)
                continue
            if pos < len(loader) and unknown_at == pos:  # the same batch twice: give it up
                logger.warning("a data loader worker died (%s); restarting the workers after "
                               "batch %d, whose videos are counted as failed", reason, pos)
                yield pos, failed_batch(sampler.batch_size)
                pos += 1
            elif pos < len(loader):
                logger.warning("a data loader worker died (%s); restarting the workers at "
                               "batch %d", reason, pos)
                unknown_at = pos
    finally:
        # the end, or a consumer that stopped early (an error, a break): the workers end
        # now, not at exit, where terminating them segfaulted the process (tools/quantize.py)
        close_iterator(it)
        deaths.uninstall()


def close_iterator(it, grace=5.0):
    """End a DataLoader iterator now, on the calling (main) thread: its reader thread
    stopped and joined, its workers ended and reaped, its queues closed, its C++ reader
    shut down, its pids out of Paddle's SIGCHLD check.  Without this an iterator dropped
    after a worker died lives on through its reader thread, which holds it; Paddle's
    __del__ then tears it down seconds later on that thread, while new workers run,
    without shutting the reader down.  Workers get SIGTERM, SIGKILL after `grace` s; the
    /dev/shm segments they leave (Paddle's handler skips them for a SIGTERM from the
    parent) are unlinked here."""
    if it is None:
        return
    if not hasattr(it, '_workers'):  # one process: Paddle's own teardown joins its thread
        it._try_shutdown_all()
        return
    thread = getattr(it, '_thread', None)
    if not it._shutdown:
        it._exit_thread_expectedly()  # the reader thread stops at its next check
        it._workers_done_event.set()
        for w in it._workers:
            if w.is_alive():
                w.terminate()
        deadline = time.monotonic() + grace
        for w in it._workers:
            w.join(max(0.0, deadline - time.monotonic()))
            if w.is_alive():
                w.kill()
                w.join()
        if thread is not None and thread.is_alive():
            # wakes the reader thread from its wait on the workers' queue (5 s otherwise);
            # every writer is dead, so this message cannot land inside another
            it._data_queue._writer.send((_ResumeIteration(), None, None))
    if thread is not None and thread is not threading.current_thread():
        thread.join(grace)
        if thread.is_alive():
            logger.warning("data loader reader thread did not end in %.0f s", grace)
    if not it._shutdown:
        it._reader.shutdown()
        it._try_shutdown_all(0)  # queues closed, pids erased; the workers are reaped
    for w in it._workers:
        if w.exitcode is not None:  # ended and reaped
            remove_segments(w.pid)


def remove_segments(pid):
    """Unlink the shared-memory segments that ended DataLoader worker `pid` left: those
    of batches sent but never read (an early stop, a restart) and, when it was SIGKILLed
    or ended by reader.deadline's _exit, every one it made.  Names start with paddle_<pid>_;
    what the main process has mapped stays valid."""
    for path in glob.glob(f'/dev/shm/paddle_{pid}_*'):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _culprits(tracked, deaths, wait=3.0):
    """Items the dead workers were reading: those of the pids Paddle named, else of any
    tracked worker that has exited.  The loader may report a death (a batch whose shared
    memory vanished with its worker) before the worker has finished dying: give it
    `wait` seconds."""
    if tracked is None:
        return set()
    reading = tracked.reading()
    deadline = time.monotonic() + wait
    while True:
        pids = [p for p in reading if p in deaths.pids] or [p for p in reading if ended(p)]
        if pids or time.monotonic() > deadline:
            return {reading[p] for p in pids}
        time.sleep(0.05)


def failed_batch(size):
    """A batch in which every one of `size` videos failed (as `collate` makes it)."""
    return {'paths': [], 'failed': np.array(size, dtype=np.int64), 'labels': None,
            'imgs': None, 'indices': None}


def per_device_batch(global_batch, world):
    if global_batch < world:
        raise ConfigError(f"batch_size {global_batch} is smaller than the {world} devices")
    return global_batch // world
