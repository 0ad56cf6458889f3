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
"""
import os

import cv2
import numpy as np

from utils.safe_pickle import safe_load

# Imported here, not inside methods: on Paddle 2.6 an `import` statement inside a
# DataLoader worker's __getitem__ can crash the worker.
try:
    import decord
except ImportError:  # OpenCV is the fallback
    decord = None


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
    def __init__(self, path, num_frames=None):
        self.path = path
        try:
            self._vr = decord.VideoReader(path, num_threads=1)
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

    def __init__(self, path, num_frames=None):
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


def mp4_backend():
    return DecordVideo if decord is not None else OpenCVVideo


def _open_mp4(path, num_frames):
    """decord first; OpenCV when decord is missing or cannot open the file (decord refuses
    a truncated mp4 outright, where OpenCV still decodes the frames that are there)."""
    if decord is None:
        return OpenCVVideo(path, num_frames)
    try:
        return DecordVideo(path, num_frames)
    except VideoDecodeError as first:
        try:
            return OpenCVVideo(path, num_frames)
        except VideoDecodeError:
            raise first from None


def open_video(path, fmt='mp4', num_frames=None):
    """Open `path` with the backend of format `fmt`; `num_frames` overrides the count."""
    if fmt in ('mp4',):
        if not os.path.isfile(path):
            raise VideoDecodeError(f"{path}: file not found")
        if os.path.getsize(path) == 0:
            raise VideoDecodeError(f"{path}: empty file")
        return _open_mp4(path, num_frames)
    if fmt == 'pkl':
        if not os.path.isfile(path):
            raise VideoDecodeError(f"{path}: file not found")
        return PklVideo(path)
    if fmt == 'frames':
        return FrameFolder(path, num_frames)
    raise ValueError(f"unknown video format {fmt!r} (known: mp4, pkl, frames)")
