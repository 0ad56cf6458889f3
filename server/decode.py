"""Uploads decoded in worker processes, as the reader decodes a list's videos: the same
sampling, scaling, crops and normalisation (KineticsReader, INFER section), through PyAV
within the upload allow-lists (reader.video_backends.open_upload).  A request is a probe
(limits checked on the headers, then the frame count, the windows) and then its windows in
chunks (server/streaming.py), every call with what is left of the request's
INFER.video_timeout.  Each worker's address space is capped (RLIMIT_AS), so a decode that
would take more memory fails in its own worker.  A worker that crashes (a decoder
segfault, memory) or hangs in C code past twice its deadline (ended by reader.deadline's
watchdog) breaks the pool; DecodePool starts a fresh one and tries the call once more
there, so the other requests of that moment are not lost and the server lives on."""
import asyncio
import base64
import contextlib
import ctypes
import faulthandler
import io
import logging
import multiprocessing
import os
import resource
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from utils.parent_watch import die_with_parent
from .limits import (DecodeFailed, DecodeLimits, check_header, check_length, check_windows,
                     header_facts)

logger = logging.getLogger(__name__)

THUMB_HEIGHT = 96
KILL_AFTER_S = 2.0  # close(): what idle workers get to leave before busy ones are killed
_reader = None  # the worker's KineticsReader (infer mode), made by init_worker
_limits = None  # the worker's DecodeLimits
_kept = None  # (path, open video) of a request whose next chunk may come here


def init_worker(cfg, limits):
    """In each worker process: one reader, decoders quiet, one OpenCV thread (the model
    has the cores), then the address-space cap."""
    global _reader, _limits
    die_with_parent()
    os.environ['OMP_NUM_THREADS'] = '1'  # before Paddle's import (the reader's base class)
    warnings.filterwarnings('ignore', message='No ccache found')
    import cv2
    cv2.setNumThreads(1)
    from reader import KineticsReader
    _reader = KineticsReader('infer', cfg, items=[])
    _limits = limits
    cap_memory(limits.memory_mb)


M_ARENA_MAX, M_MMAP_THRESHOLD = -8, -3  # glibc mallopt parameters


def cap_memory(memory_mb):
    """RLIMIT_AS = this process's size now (the imports) + memory_mb; 0: no cap.  glibc
    first: two malloc arenas (each thread's own arena reserves 64 MB of address space),
    and large blocks (frames) always mmapped, so they go back to the system when freed."""
    if not memory_mb:
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_ARENA_MAX, 2)
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):  # not glibc
        pass
    with open('/proc/self/status') as f:
        size_kb = next(int(line.split()[1]) for line in f if line.startswith('VmSize:'))
    limit = size_kb * 1024 + int(memory_mb) * 2 ** 20
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def warm_up():
    return _reader is not None


def thumbnails(clip, mean, std, seg_num, seglen):
    """float32 [T, 3L, S, S] (normalised, as the model sees it) -> JPEG data URLs, one per
    sampled frame."""
    from PIL import Image
    x = clip.reshape(seg_num * seglen, 3, *clip.shape[2:]).transpose(0, 2, 3, 1)  # -> [T*L, S, S, 3]
    frames = np.clip((x * np.asarray(std) + np.asarray(mean)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    urls = []
    for f in frames:
        img = Image.fromarray(f)
        img = img.resize((max(1, round(img.width * THUMB_HEIGHT / img.height)), THUMB_HEIGHT),
                         Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, 'JPEG', quality=80)
        urls.append('data:image/jpeg;base64,' + base64.b64encode(buf.getvalue()).decode())
    return urls


@contextlib.contextmanager
def _quiet_watchdog(seconds):
    """reader.deadline's hard limit without its stack dump (one log line, the pool's, when a
    decode stuck in C code ends its worker at twice the deadline)."""
    if not seconds:
        yield
        return
    with open(os.devnull, 'w') as devnull:
        faulthandler.dump_traceback_later(2 * seconds, exit=True, file=devnull)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()


def _bounded(work, path, seconds):
    """work() within `seconds` -> (its result, seconds taken); every failure -> DecodeFailed
    with a message that names no server path."""
    from reader.deadline import deadline
    t0 = time.perf_counter()
    seconds = max(seconds, 1e-3) if seconds else 0
    try:
        with deadline(seconds), _quiet_watchdog(seconds):
            return work(), time.perf_counter() - t0
    except Exception as e:
        failure = _as_failure(e, path)
    # raised out here, with no __context__: the failed decode's frames (its traceback's
    # locals) are freed now, not when the worker's next task replaces this exception
    raise failure


def _as_failure(e, path):
    from reader.deadline import VideoTimeout
    from reader.video_backends import VideoDecodeError
    if isinstance(e, DecodeFailed):
        return DecodeFailed(str(e))
    if isinstance(e, VideoDecodeError):
        return DecodeFailed(f"cannot decode the video: {str(e).replace(path, 'upload')}")
    if isinstance(e, VideoTimeout):
        return DecodeFailed(f"decoding took over INFER.video_timeout "
                            f"({_reader.video_timeout} s for the whole request)")
    if isinstance(e, MemoryError):
        return DecodeFailed("decoding the video needs more memory than a decode worker has "
                            "(--decode_memory_mb)")
    # a decoder's own error on a strange file: still the file's fault
    return DecodeFailed(f"cannot decode the video ({type(e).__name__})")


def _open(path, count=None):
    from reader.video_backends import open_upload
    return open_upload(path, count, max_frames=_limits.max_frames)


def _video(path, count):
    """The upload, open: as the previous chunk of its request left it (a decoder in order
    goes on from there, PyAVVideo keeps its index), else opened afresh."""
    global _kept
    if _kept is not None and _kept[0] == path:  # upload names are random: the same request
        video, _kept = _kept[1], None
        return video
    _release()
    return _open(path, count)


def _release():
    """Close the video an unfinished request left open (its client went, say)."""
    global _kept
    if _kept is not None:
        _kept[1].close()
        _kept = None


def probe_upload(path, window_seconds=None, stride_seconds=None, seconds=0):
    """In a worker: the limits on the headers, then the frame count, then the windows ->
    {'num_frames', 'fps', 'spans': [(first, stop)] or None, 'times', 'decode_s'}."""
    def probe():
        global _kept
        import av
        _release()  # a new request
        from reader.inputs import video_windows
        from reader.video_backends import UPLOAD_OPTIONS
        try:
            with av.open(path, options=UPLOAD_OPTIONS) as container:
                if not container.streams.video:
                    raise DecodeFailed("cannot decode the video: no video stream")
                check_header(*header_facts(container), _limits)
        except av.ArgumentError:  # what FFmpeg says of a demuxer off the allow-list
            raise DecodeFailed("cannot decode the video: not one of the containers this "
                               "server reads (mp4, mov, mkv, webm, avi, y4m)") from None
        except av.FFmpegError as e:
            raise DecodeFailed(f"cannot decode the video: not a video file "
                               f"({type(e).__name__})") from None
        video = _open(path)
        try:
            count, fps = video.num_frames, video.fps
            check_length(count, count / fps if fps else None, _limits)
            out = {'num_frames': count, 'fps': fps, 'spans': None, 'times': None}
            if window_seconds:
                if not fps:
                    raise DecodeFailed("the video has no frame rate: windows need one")
                stride = stride_seconds or window_seconds
                check_windows(count / fps, window_seconds, stride, _limits)
                out['spans'], out['times'] = video_windows(count, fps, window_seconds, stride)
        except BaseException:
            video.close()
            raise
        _kept = (path, video)  # opened (and counted) once: the first chunk goes on from here
        return out
    out, taken = _bounded(probe, path, seconds)
    return {**out, 'decode_s': taken}


def decode_windows(path, count, spans, with_frames=False, seconds=0, last=True):
    """In a worker: the clips of `spans` ([(first, stop)], or [None]: the whole video)
    -> {'clips': float32 [K, (V,) T, 3L, S, S], 'frames': K lists of data URLs or None,
    'decode_s'}.  Unless `last`, the video stays open for the request's next chunk."""
    reader = _reader

    def decode():
        global _kept
        video = _video(path, count)
        try:
            clips = [reader.views(reader.read(video, None, span)) for span in spans]  # eval: no rng
        except BaseException:
            video.close()
            raise
        if last:
            video.close()
        else:
            _kept = (path, video)
        return clips
    clips, taken = _bounded(decode, path, seconds)
    frames = None
    if with_frames:
        views = reader.num_views
        frames = [thumbnails(c[0] if views > 1 else c, reader.mean, reader.std,
                             reader.seg_num, reader.seglen) for c in clips]
    return {'clips': np.stack(clips), 'frames': frames, 'decode_s': taken}


def exit_codes(pool):
    """How a broken pool's workers ended: 'exit codes [-11, -15]' (-N: signal N; the pool
    sends SIGTERM (-15) to the survivors when one dies)."""
    procs = (getattr(pool, '_processes', None) or {}).values()
    return f"exit codes {[p.exitcode for p in procs]}" if procs else "exit codes unknown"


class DecodePool:
    """`workers` spawned processes (not forked: the server process holds Paddle's threads)
    running probe_upload and decode_windows."""

    def __init__(self, cfg, workers, limits=None):
        self.cfg, self.workers, self.restarts = cfg, max(1, int(workers)), 0
        self.limits = limits or DecodeLimits()
        self.on_restart = None  # called after each restart (the app counts them)
        self._ready = []
        self.pool = self._start()
        self._suspects = asyncio.Lock()  # calls in flight when a worker died, retried one at a time

    def _executor(self):
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context('spawn'),
                                   initializer=init_worker, initargs=(self.cfg, self.limits))

    def _start(self):
        """A fresh pool, every worker started now (loading its reader in the background).
        Python's pool (3.11) watches for deaths only the workers it had when it last woke,
        and wakes for a task before it spawns a worker for it: a worker spawned for a task
        that kills it dies unseen (its request hangs), and a spawn that races the pool's
        breaking raises OSError from submit."""
        pool = self._executor()
        self._ready = [pool.submit(warm_up) for _ in range(self.workers)]
        return pool

    def warm(self):
        """-> a function that waits until every worker has loaded its reader."""
        futures, pool = self._ready, self.pool

        def ready():
            try:
                return [f.result() for f in futures]
            except BrokenProcessPool as e:
                raise BrokenProcessPool(f"a decode worker died while starting "
                                        f"({exit_codes(pool)})") from e
        return ready

    def _replace(self, broken):
        if self.pool is broken:
            self.restarts += 1
            logger.warning("a decode worker died (crash, memory, or hung past 2 x its "
                           "deadline; %s): starting a fresh pool (restart %d)",
                           exit_codes(broken), self.restarts)
            broken.shutdown(wait=False, cancel_futures=True)
            self.pool = self._start()
            if self.on_restart is not None:
                self.on_restart()

    async def _attempt(self, fn, *args, **kwargs):
        """-> (True, fn's result), or (False, None) when its pool broke (then replaced)."""
        pool = self.pool
        try:
            return True, await asyncio.wrap_future(pool.submit(fn, *args, **kwargs))
        except BrokenProcessPool:
            self._replace(pool)
            return False, None

    async def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) in a worker (probe_upload, decode_windows); raises
        DecodeFailed.  Cancelling the await cancels the call if no worker has taken it.
        A worker's death fails every call in flight, only one of which killed it: each is
        tried once more, one at a time, so another call's second crash there is not
        taken for its own (two different killers at once still can be)."""
        done, out = await self._attempt(fn, *args, **kwargs)
        if not done:
            async with self._suspects:
                done, out = await self._attempt(fn, *args, **kwargs)
        if not done:
            raise DecodeFailed("the decoder stopped on this video (it crashed, ran out of "
                               "its memory, or hung past its deadline)")
        return out

    async def decode(self, path, window_seconds=None, stride_seconds=None, with_frames=False):
        """The whole upload at once (no streaming): probe_upload's answer with the clips and
        frames of decode_windows."""
        timeout = self.cfg.INFER.video_timeout
        meta = await self.call(probe_upload, path, window_seconds, stride_seconds, timeout)
        left = max(timeout - meta['decode_s'], 1e-3) if timeout else 0
        out = await self.call(decode_windows, path, meta['num_frames'], meta['spans'] or [None],
                              with_frames, left)
        return {**meta, **out, 'decode_s': meta['decode_s'] + out['decode_s']}

    def close(self):
        """Stop the workers and wait for them (a server that exits right after, as uvicorn
        does by re-raising SIGTERM, would otherwise leave them waiting for work): idle
        workers leave, busy ones (a hung decode) are killed after KILL_AFTER_S."""
        processes = list((getattr(self.pool, '_processes', None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        until = time.monotonic() + KILL_AFTER_S
        for p in processes:
            p.join(max(0.0, until - time.monotonic()))
            if p.is_alive():
                logger.warning("a decode worker was still busy at shutdown: killed")
                p.kill()
                p.join(5)
        self.pool.shutdown(wait=True)
