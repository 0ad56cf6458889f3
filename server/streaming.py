"""One upload through the decode workers and the model with bounded memory: a probe
(limits, frame count, windows), then the windows a chunk at a time, each chunk's clips
sent to the micro-batcher while the next chunk decodes, so a request holds at most two
chunks of clips (about 2 x CHUNK_BYTES), not every window's.  INFER.video_timeout covers
the probe and every chunk together (the decode time of the request, as the workers count
it).  A client that disconnects cancels the chunks not yet decoded and its clips not yet
through the model."""
import asyncio
import math

from .decode import decode_windows, probe_upload
from .limits import DecodeFailed, check_window_options

CHUNK_BYTES = 64 << 20  # clips of one chunk (at least one window)
MAX_CHUNK = 32          # windows per chunk


class ClientGone(Exception):
    """The client closed its connection before the answer."""


def chunk_windows(clip_shape):
    """Windows per chunk for clips of `clip_shape` (float32)."""
    return max(1, min(MAX_CHUNK, CHUNK_BYTES // (4 * math.prod(clip_shape))))


async def classify(pool, batcher, path, options, chunk, on_windows=None):
    """The upload at `path` -> {'num_frames', 'fps', 'times', 'frames', 'decode_s',
    'results': [(probabilities, batch info)] one per window}; raises DecodeFailed.
    `on_windows(n)` is told of every n windows decoded."""
    window, stride = options['window_seconds'], options['stride_seconds']
    with_frames = options['with_frames']
    check_window_options(window, stride)
    timeout = pool.cfg.INFER.video_timeout
    meta = await pool.call(probe_upload, path, window, stride, timeout)
    used, spans = meta['decode_s'], meta['spans'] or [None]

    def next_chunk(i):
        left = timeout - used if timeout else 0
        if timeout and left <= 0:
            raise DecodeFailed(f"decoding took over INFER.video_timeout ({timeout} s for "
                               f"the whole request)")
        return asyncio.ensure_future(pool.call(decode_windows, path, meta['num_frames'],
                                               spans[i:i + chunk], with_frames, left,
                                               i + chunk >= len(spans)))
    results, frames = [], [] if with_frames else None
    pending = next_chunk(0)
    try:
        for i in range(0, len(spans), chunk):
            out = await pending
            used += out['decode_s']
            if on_windows is not None:
                on_windows(len(out['clips']))
            pending = next_chunk(i + chunk) if i + chunk < len(spans) else None
            results += await batcher.submit(list(out['clips']))  # the next chunk decodes meanwhile
            if frames is not None:
                frames += out['frames']
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
    return {'num_frames': meta['num_frames'], 'fps': meta['fps'], 'times': meta['times'],
            'frames': frames, 'decode_s': used, 'results': results}


async def _disconnected(request):
    """Returns when the client of `request` (its body read) closes the connection."""
    while (await request.receive())['type'] != 'http.disconnect':
        pass


async def unless_client_leaves(request, work):
    """Await the coroutine `work`; when the client leaves first, cancel it and raise
    ClientGone."""
    task, gone = asyncio.ensure_future(work), asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    await asyncio.wait({task})  # cancelled: its awaits end at once
    raise ClientGone()
