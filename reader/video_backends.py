"""Video decoding behind one small interface, one class per source format.

    video = open_video(path, fmt)      # fmt: mp4 | pkl | frames
    video.num_frames                   # frames that really decode
    video.fps                          # frames per second; None where unknown (pkl, frames)
    video.get_frames(indices)          # uint8 [len(indices), H, W, 3] RGB
    video.close()

Only the requested frames are decoded.  The frame count of a container header can be
larger than what decodes (truncated downloads): when a requested frame fails, the
mp4 readers count the frames that really decode and raise `FrameCountChanged` so the
caller samples again within that count.

mp4 format: H.264 in mp4/mov/mkv/webm goes through PyAV (PyAVVideo: the frames decord
gives, for a third less decoding), everything else, and anything PyAVVideo is unsure of,
through decord, then OpenCV.

upload format (files from the network, server/): PyAV only, opened with FFmpeg's
allow-lists (UPLOAD_OPTIONS: the UPLOAD_FORMATS demuxers, the file protocol), PyAVVideo
where it applies and PyAVInOrder otherwise.  decord and OpenCV bundle FFmpeg builds with
every demuxer and protocol and take no allow-list: an HLS playlist or concat script
would make them open the paths or URLs it names.
"""
import bisect
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from utils.safe_pickle import safe_load

# Imported here, not inside methods: on Paddle 2.6 an `import` statement inside a
# DataLoader worker's __getitem__ can crash the worker.
try:
    import decord
except ImportError:  # OpenCV is the fallback
    decord = None
try:
    import av
except ImportError:  # decord does it all
    av = None


# FFmpeg demuxer names (av_match_list: 'mov' is mov,mp4,m4a,3gp,3g2,mj2; 'matroska' is
# matroska,webm); not the playlist (hls), script (concat), image or device demuxers
UPLOAD_FORMATS = ('mov', 'matroska', 'avi', 'yuv4mpegpipe')
UPLOAD_OPTIONS = {'format_whitelist': ','.join(UPLOAD_FORMATS), 'protocol_whitelist': 'file'}


class VideoDecodeError(RuntimeError):
    """A video that cannot be read; the message names the file."""


class FrameCountChanged(Exception):
    def __init__(self, num_frames):
        super().__init__(num_frames)
        self.num_frames = num_frames


def _as_rgb(frame):
    """Grayscale or RGBA decode results -> [H, W, 3]."""
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    return frame[:, :, :3]


class DecordVideo:
    def __init__(self, path, num_frames=None, threads=1):
        self.path = path
        try:
            self._vr = decord.VideoReader(path, num_threads=threads)
        except Exception as e:  # decord raises DECORDError/RuntimeError for any bad file
            raise VideoDecodeError(f"{path}: cannot open video ({_first_line(e)})") from None
        self.num_frames = num_frames or len(self._vr)
        if self.num_frames <= 0:
            raise VideoDecodeError(f"{path}: no video frames")
        self.fps = _valid_fps(self._vr.get_avg_fps())

    def get_frames(self, indices):
        uniq = sorted(set(int(i) for i in indices))
        try:
            frames = self._vr.get_batch(uniq).asnumpy()
            if frames.ndim != 4 or frames.shape[-1] != 3:  # decord mis-sizes tiny frames
                raise ValueError(f"decord returned shape {frames.shape}")
        except Exception:
            real = self._count_decodable()
            if real == 0:
                raise VideoDecodeError(f"{self.path}: no frame decodes") from None
            if real < self.num_frames:
                self._vr = decord.VideoReader(self.path, num_threads=1)  # fresh state
                raise FrameCountChanged(real) from None
            # every frame decodes in order, yet random access failed: let OpenCV do it
            return OpenCVVideo(self.path, self.num_frames).get_frames(indices)
        pos = {i: k for k, i in enumerate(uniq)}
        return np.stack([_as_rgb(frames[pos[int(i)]]) for i in indices])

    def _count_decodable(self):
        count = 0
        try:
            self._vr.seek(0)
            while count < self.num_frames:
                self._vr.next()
                count += 1
        except Exception:  # StopIteration or a decode error ends the count
            pass
        return count

    def close(self):
        self._vr = None


class OpenCVVideo:
    """Fallback when decord is missing; counts frames by grabbing (no colour conversion)."""

    def __init__(self, path, num_frames=None, threads=1):
        self.path = path
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise VideoDecodeError(f"{path}: cannot open video")
        self.fps = _valid_fps(cap.get(cv2.CAP_PROP_FPS))
        if num_frames is None:
            num_frames = 0
            while cap.grab():
                num_frames += 1
        cap.release()
        self.num_frames = num_frames
        if num_frames <= 0:
            raise VideoDecodeError(f"{path}: no video frames")

    def get_frames(self, indices):
        wanted = sorted(set(int(i) for i in indices))
        got, grabbed = {}, 0
        cap = cv2.VideoCapture(self.path)
        while grabbed <= wanted[-1] and cap.grab():
            pos, grabbed = grabbed, grabbed + 1
            if pos in wanted:
                ok, frame = cap.retrieve()
                if not ok:
                    grabbed -= 1
                    break
                got[pos] = _as_rgb(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3
                                   else frame)
        cap.release()
        if len(got) < len(wanted):
            if grabbed == 0:
                raise VideoDecodeError(f"{self.path}: no frame decodes")
            raise FrameCountChanged(grabbed)
        return np.stack([got[int(i)] for i in indices])

    def close(self):
        pass


class NotFastPath(Exception):
    """PyAVVideo cannot promise decord's frames for this file: decord reads it."""


class PyAVVideo:
    """H.264 in mp4/mov/mkv/webm through PyAV, with the frames decord gives and less
    decoding.  Frame i is the i-th presentation timestamp, as decord numbers frames, and
    the pixels come from the same FFmpeg decoder and RGB conversion (equal to decord's on
    the real clips of h264 in mp4/mkv, tests/test_e2e.py checks generated ones).  The
    saving: a frame that no other frame refers to (most B-frames) is not decoded unless
    it is sampled (FFmpeg's skip_frame NONREF, set per packet), and decoding stops at the
    last sampled frame (the saving: docs/training.md#reading-videos).
    Each sampled frame is decoded from the last keyframe at or before it, as decord
    seeks: frames group into runs, one per such keyframe, and the decoder seeks over
    the gap between runs instead of decoding it.  `threads` > 1 (one video while the
    model waits): the runs are shared among `threads` decoders, each with its own
    container, in threads (FFmpeg decodes outside the GIL); when one run holds most of
    the work (the largest share above PARALLEL_SHARE of the frames to decode), one
    decoder with FFmpeg's frame threads instead.

    Only where the container's timestamps say which packet is which frame: not AVI
    (its demuxer makes up presentation times, so a skipped packet could be a sampled
    frame), not other codecs, not rotated videos (decord turns them upright).  Such a
    file, or a decode error, goes to decord (`_open_mp4`'s chain) for the whole call."""

    CONTAINERS = ('mov,mp4,m4a,3gp,3g2,mj2', 'matroska,webm')
    # runs decoded side by side only when the largest decoder's share of the frames stays
    # below this; else one decoder with frame threads (real clips: a 720p clip with
    # keyframes at 0 and 250 of 300 frames decoded faster that way)
    PARALLEL_SHARE = 0.8

    def __init__(self, path, num_frames=None, threads=1, options=None, max_frames=None,
                 fallback=None):
        self.path, self._given, self._fallback = path, num_frames, None
        self._threads, self._more = max(1, int(threads)), []
        self._options = options  # av.open's (the allow-lists of uploads)
        # the decoder of the whole call when this one gives up: decord's chain by default
        self._reopen = fallback or (lambda: _open_mp4(path, num_frames, fast=False))
        try:
            container = av.open(path, options=options)
        except av.FFmpegError:
            raise NotFastPath() from None
        try:
            stream = container.streams.video[0] if container.streams.video else None
            if (stream is None or container.format.name not in self.CONTAINERS
                    or stream.codec_context.name != 'h264'):
                raise NotFastPath()
            pts, keys = [], []
            for packet in container.demux(stream):  # the index, as decord's open reads it
                if max_frames and len(pts) > max_frames:
                    raise VideoDecodeError(f"{path}: over {max_frames} frames")
                if packet.size:  # the last packet is an empty one that flushes
                    if packet.pts is None or packet.is_corrupt:  # cut short: decord refuses
                        raise NotFastPath()
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append(packet.pts)
            if not keys or len(set(pts)) != len(pts):
                raise NotFastPath()
        except (NotFastPath, av.FFmpegError):
            container.close()
            raise NotFastPath() from None
        except VideoDecodeError:
            container.close()
            raise
        self._pts, self._keys = sorted(pts), sorted(keys)
        self.num_frames = num_frames or len(pts)
        self.fps = _valid_fps(stream.average_rate)
        self._container, self._stream, self._decoded = container, stream, False

    def get_frames(self, indices):
        if self._fallback is None:
            try:
                return self._decode(indices)
            except (NotFastPath, av.FFmpegError):
                self._fallback = self._reopen()
        return self._fallback.get_frames(indices)

    def _decode(self, indices):
        uniq = sorted(set(int(i) for i in indices))
        if uniq[0] < 0 or uniq[-1] >= len(self._pts):
            raise NotFastPath()  # past what the index holds: decord recounts
        want = {self._pts[i] for i in uniq}
        parts = self._share(self._runs(uniq))
        if len(parts) == 1:
            if not self._decoded and self._threads > 1:  # set before the codec opens
                self._stream.thread_type = 'FRAME'
                self._stream.thread_count = self._threads
            self._decoded = True
            got = _decode_runs(self._container, self._stream, parts[0], want)
        else:
            while len(self._more) < len(parts):
                container = av.open(self.path, options=self._options)
                self._more.append((container, container.streams.video[0]))
            got = {}
            with ThreadPoolExecutor(len(parts)) as pool:
                for part in pool.map(lambda cs, part: _decode_runs(*cs, part, want),
                                     self._more, parts):
                    got.update(part)
        return np.stack([got[self._pts[int(i)]] for i in indices])

    def _runs(self, uniq):
        """The sampled frames (sorted indices) grouped by the keyframe each is decoded
        from: [(keyframe pts, [sampled pts]), ...] in keyframe order."""
        runs = {}
        for i in uniq:
            k = self._keys[max(bisect.bisect_right(self._keys, self._pts[i]) - 1, 0)]
            runs.setdefault(k, []).append(self._pts[i])
        return sorted(runs.items())

    def _share(self, runs):
        """Runs -> one list of runs per decoder: the longest run (frames from its keyframe
        to its last sampled frame) to the least loaded decoder, in turn."""
        index = lambda pts: bisect.bisect_left(self._pts, pts)  # noqa: E731 (_pts is sorted)
        cost = [index(frames[-1]) - index(key) + 1 for key, frames in runs]
        n = min(self._threads, len(runs))
        parts, loads = [[] for _ in range(n)], [0] * n
        for c, run in sorted(zip(cost, runs), key=lambda t: -t[0]):
            j = loads.index(min(loads))
            parts[j].append(run)
            loads[j] += c
        if n == 1 or max(loads) > self.PARALLEL_SHARE * sum(loads):
            return [runs]
        return [sorted(p) for p in parts]

    def close(self):
        if self._fallback is not None:
            self._fallback.close()
        for container, _ in self._more:
            container.close()
        self._container.close()


def _decode_runs(container, stream, runs, want):
    """Decode `runs` ([(keyframe pts, [sampled pts])], keyframe order) with one
    container: seek to a run's keyframe unless the decoder is already past it; a packet
    whose frame is not in `want` (every sampled pts) and that no frame refers to is not
    decoded.  -> {pts: RGB frame} for the runs' frames."""
    codec, got, packets, demuxed = stream.codec_context, {}, None, -1
    for key, frames in runs:
        left = set(frames) - got.keys()
        if not left:
            continue
        if packets is None or key > demuxed:  # skip the gap: the keyframe needs nothing before it
            container.seek(key, stream=stream, backward=True)  # flushes the decoder
            packets = container.demux(stream)
        for packet in packets:
            if packet.pts is not None:
                demuxed = max(demuxed, packet.pts)
            codec.skip_frame = 'NONREF' if packet.size and packet.pts not in want else 'DEFAULT'
            for frame in codec.decode(packet):
                if getattr(frame, 'rotation', 0):
                    raise NotFastPath()
                if frame.pts in want and frame.pts not in got:
                    got[frame.pts] = _as_rgb(frame.to_ndarray(format='rgb24'))
                    left.discard(frame.pts)
            if not left:
                break
        if left:
            raise NotFastPath()  # frames that do not decode: decord counts what does
    return got


class PyAVInOrder:
    """Any video stream PyAV opens, decoded from its start in presentation order: frame i
    is the i-th frame out of the decoder, as decord numbers them (no seeking: an upload's
    timestamps are not trusted).  A later call for earlier frames starts over; frames
    after the last sampled one are not decoded.  The count comes from the packets
    (demuxed, not decoded), refused past `max_frames`."""

    def __init__(self, path, num_frames=None, threads=1, options=None, max_frames=None):
        self.path, self._options, self._threads = path, options, max(1, int(threads))
        container = self._open()
        try:
            stream = container.streams.video[0]
            count = 0
            for packet in container.demux(stream):
                count += packet.size > 0  # the last packet is an empty one that flushes
                if max_frames and count > max_frames:
                    raise VideoDecodeError(f"{path}: over {max_frames} frames")
            self.fps = _valid_fps(stream.average_rate or stream.guessed_rate)
        except av.FFmpegError as e:
            raise VideoDecodeError(f"{path}: cannot read video ({_first_line(e)})") from None
        finally:
            container.close()
        self.num_frames = num_frames or count
        if self.num_frames <= 0:
            raise VideoDecodeError(f"{path}: no video frames")
        self._container, self._frames, self._next = None, None, 0

    def _open(self):
        try:
            container = av.open(self.path, options=self._options)
        except av.FFmpegError as e:
            raise VideoDecodeError(f"{self.path}: cannot open video ({_first_line(e)})") from None
        if not container.streams.video:
            container.close()
            raise VideoDecodeError(f"{self.path}: no video stream")
        return container

    def _restart(self):
        self.close()
        self._container = self._open()
        stream = self._container.streams.video[0]
        if self._threads > 1:
            stream.thread_type, stream.thread_count = 'AUTO', self._threads
        self._frames, self._next = self._container.decode(stream), 0

    def get_frames(self, indices):
        wanted = sorted(set(int(i) for i in indices))
        if self._frames is None or wanted[0] < self._next:
            self._restart()
        got = {}
        try:
            while self._next <= wanted[-1]:
                frame = next(self._frames)
                if self._next in wanted:
                    got[self._next] = _upright(frame)
                self._next += 1
        except (StopIteration, av.FFmpegError):  # fewer frames than counted: the caller resamples
            if self._next == 0:
                raise VideoDecodeError(f"{self.path}: no frame decodes") from None
            count, self._frames = self._next, None
            raise FrameCountChanged(count) from None
        return np.stack([got[int(i)] for i in indices])

    def close(self):
        if self._container is not None:
            self._container.close()
            self._container, self._frames = None, None


def _upright(frame):
    """A PyAV frame -> RGB [H, W, 3], turned as its display matrix says (as decord does)."""
    rgb = _as_rgb(frame.to_ndarray(format='rgb24'))
    turns = int(round(getattr(frame, 'rotation', 0) / 90)) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def open_upload(path, num_frames=None, threads=1, max_frames=None):
    """A file from the network: PyAV only, within UPLOAD_OPTIONS' allow-lists (see the
    module docstring); PyAVVideo where it applies, else PyAVInOrder."""
    if av is None:
        raise VideoDecodeError(f"{path}: uploads need PyAV (pip install av)")
    def in_order():
        return PyAVInOrder(path, num_frames, threads, UPLOAD_OPTIONS, max_frames)
    try:
        return PyAVVideo(path, num_frames, threads, UPLOAD_OPTIONS, max_frames, fallback=in_order)
    except NotFastPath:
        return in_order()


def _decode_jpeg(data, where):
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise VideoDecodeError(f"{where}: cannot decode image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class PklVideo:
    """The original's pickle: (video_id, label, [jpeg bytes per frame]), protocol 2."""
    fps = None  # not stored

    def __init__(self, path, num_frames=None):
        self.path = path
        try:
            record = safe_load(path, encoding='bytes')
            _, self.label, self._frames = record[:3]
        except Exception as e:
            raise VideoDecodeError(f"{path}: not a video pkl ({_first_line(e)})") from None
        self._frames = [f.encode('latin1') if isinstance(f, str) else f for f in self._frames]
        self.num_frames = len(self._frames)
        if self.num_frames == 0:
            raise VideoDecodeError(f"{path}: no frames in pkl")

    def get_frames(self, indices):
        return np.stack([_decode_jpeg(self._frames[int(i)], f"{self.path} frame {i}")
                         for i in indices])

    def close(self):
        self._frames = None


class FrameFolder:
    """A folder of img_00001.jpg ... (1-based), as the frames list format names it."""
    fps = None  # not stored

    def __init__(self, path, num_frames=None, template='img_{:05d}.jpg'):
        self.path, self.template = path, template
        if not os.path.isdir(path):
            raise VideoDecodeError(f"{path}: frame folder not found")
        if num_frames is None:
            num_frames = sum(1 for f in os.listdir(path) if f.startswith('img_'))
        self.num_frames = num_frames
        if num_frames <= 0:
            raise VideoDecodeError(f"{path}: no frames in folder")

    def get_frames(self, indices):
        frames = []
        for i in indices:
            f = os.path.join(self.path, self.template.format(int(i) + 1))
            try:
                with open(f, 'rb') as fh:
                    frames.append(_decode_jpeg(fh.read(), f))
            except OSError:
                raise VideoDecodeError(f"{f}: frame missing") from None
        return np.stack(frames)

    def close(self):
        pass


def _valid_fps(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 and value == value and value < 1e4 else None


def _first_line(e):
    text = str(e).strip().splitlines()
    return text[-1][:200] if text else type(e).__name__


def _open_mp4(path, num_frames, threads=1, fast=True):
    """PyAV for H.264 in mp4/mov/mkv/webm (`fast`), else decord; OpenCV when decord is
    missing or cannot open the file (decord refuses a truncated mp4 outright, where
    OpenCV still decodes the frames that are there)."""
    if fast and av is not None:
        try:
            return PyAVVideo(path, num_frames, threads)
        except NotFastPath:
            pass
    if decord is None:
        return OpenCVVideo(path, num_frames)
    try:
        return DecordVideo(path, num_frames, threads)
    except VideoDecodeError as first:
        try:
            return OpenCVVideo(path, num_frames)
        except VideoDecodeError:
            raise first from None


def open_video(path, fmt='mp4', num_frames=None, threads=1):
    """Open `path` with the backend of format `fmt`; `num_frames` overrides the count;
    `threads`: decoder threads (mp4 format)."""
    if fmt in ('mp4',):
        if not os.path.isfile(path):
            raise VideoDecodeError(f"{path}: file not found")
        if os.path.getsize(path) == 0:
            raise VideoDecodeError(f"{path}: empty file")
        return _open_mp4(path, num_frames, threads)
    if fmt == 'pkl':
        if not os.path.isfile(path):
            raise VideoDecodeError(f"{path}: file not found")
        return PklVideo(path)
    if fmt == 'frames':
        return FrameFolder(path, num_frames)
    raise ValueError(f"unknown video format {fmt!r} (known: mp4, pkl, frames)")
