"""Uploads decoded in worker processes, as the reader decodes a list's videos: the same
sampling, scaling, crops and normalisation (KineticsReader, INFER section), each video (or
window) bounded by INFER.video_timeout.  A worker that crashes (a decoder segfault) or
hangs in C code past twice the timeout (ended by reader.guard's watchdog) breaks the
pool; DecodePool starts a fresh one and tries the upload once more there, so the other
requests of that moment are not lost and the server lives on."""
import asyncio
import base64
import io
import logging
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from utils.orphans import die_with_parent

logger = logging.getLogger(__name__)

THUMB_HEIGHT = 96
_reader = None  # the worker's KineticsReader (infer mode), made by init_worker


class DecodeFailed(Exception):
    """The upload is not a video this server can read; the message is for the client."""


def init_worker(cfg):
    """In each worker process: one reader, decoders quiet, one OpenCV thread (the model
    has the cores)."""
    global _reader
    die_with_parent()
    os.environ['OMP_NUM_THREADS'] = '1'  # before Paddle's import (the reader's base class)
    warnings.filterwarnings('ignore', message='No ccache found')
    import cv2
    cv2.setNumThreads(1)
    try:
        import decord
        decord.logging.set_level(decord.logging.QUIET)
    except (ImportError, AttributeError):
        pass
    from reader import KineticsReader
    _reader = KineticsReader('infer', cfg, items=[])
    _reader.fmt = 'mp4'  # uploads are containers, whatever the config reads from lists


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


def decode_upload(path, window_seconds=None, stride_seconds=None, with_frames=False,
                  max_windows=256):
    """In a worker: the upload at `path` -> {'clips': float32 [K, (V,) T, 3L, S, S] (K = 1,
    or one per window), 'times': [(start_s, end_s)] or None, 'frames': K lists of data URLs
    or None, 'num_frames', 'fps', 'decode_s'}.  Raises DecodeFailed with a message that
    names no server path."""
    from reader.guard import VideoTimeout, deadline
    from reader.sampling import window_spans
    from reader.video_backends import VideoDecodeError, open_video
    reader, timeout = _reader, _reader.video_timeout
    t0 = time.perf_counter()
    try:
        with deadline(timeout, hard=True):
            video = open_video(path, 'mp4')
            try:
                count, fps = video.num_frames, video.fps
            finally:
                video.close()
        times = None
        reader.items = [(path, -1, None)]
        if window_seconds:
            if not fps:
                raise DecodeFailed("the video has no frame rate: windows need one")
            spans = window_spans(count, fps, window_seconds, stride_seconds or window_seconds)
            if len(spans) > max_windows:
                raise DecodeFailed(f"{len(spans)} windows: at most {max_windows} per request "
                                   f"(use a longer stride_seconds)")
            reader.items = [(path, -1, count, (first, stop)) for first, stop, _, _ in spans]
            times = [(round(start, 3), round(end, 3)) for _, _, start, end in spans]
        clips = []
        for i in range(len(reader.items)):
            with deadline(timeout, hard=True):
                frames, _ = reader.load_frames(i, None)  # eval sampling: no randomness
            clips.append(reader.views(frames))
    except VideoDecodeError as e:
        raise DecodeFailed(f"cannot decode the video: {str(e).replace(path, 'upload')}") from None
    except VideoTimeout:
        raise DecodeFailed(f"decoding took over INFER.video_timeout ({timeout} s)") from None
    except DecodeFailed:
        raise
    except Exception as e:  # a decoder's own error on a strange file: still the file's fault
        logger.warning("decoding an upload failed: %s: %s", type(e).__name__, e)
        raise DecodeFailed(f"cannot decode the video ({type(e).__name__})") from None
    frames = None
    if with_frames:
        views = reader.num_views
        frames = [thumbnails(c[0] if views > 1 else c, reader.mean, reader.std,
                             reader.seg_num, reader.seglen) for c in clips]
    return {'clips': np.stack(clips), 'times': times, 'frames': frames, 'num_frames': count,
            'fps': fps, 'decode_s': time.perf_counter() - t0}


class DecodePool:
    """`workers` spawned processes (not forked: the server process holds Paddle's threads)
    running decode_upload."""

    def __init__(self, cfg, workers):
        self.cfg, self.workers, self.restarts = cfg, max(1, int(workers)), 0
        self.on_restart = None  # called after each restart (the app counts them)
        self.pool = self._start()

    def _start(self):
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context('spawn'),
                                   initializer=init_worker, initargs=(self.cfg,))

    def warm(self):
        """Start every worker loading its reader (in the background); -> a function that
        waits until they have."""
        futures = [self.pool.submit(warm_up) for _ in range(self.workers)]
        return lambda: [f.result() for f in futures]

    def _replace(self, broken):
        if self.pool is broken:
            self.restarts += 1
            logger.warning("a decode worker died (crash, or hung past 2 x video_timeout): "
                           "starting a fresh pool (restart %d)", self.restarts)
            broken.shutdown(wait=False, cancel_futures=True)
            self.pool = self._start()
            if self.on_restart is not None:
                self.on_restart()

    async def decode(self, path, **options):
        """decode_upload in a worker; raises DecodeFailed."""
        for attempt in range(2):
            pool = self.pool
            try:
                return await asyncio.wrap_future(pool.submit(decode_upload, path, **options))
            except BrokenProcessPool:
                self._replace(pool)
        raise DecodeFailed("the decoder stopped on this video (it crashed, or hung past "
                           "twice INFER.video_timeout)")

    def close(self):
        """Stop the workers and wait for them (a server that exits right after, as uvicorn
        does by re-raising SIGTERM, would otherwise leave them waiting for work)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
