"""The Kinetics reader: list file -> (imgs, label) items for paddle.io.DataLoader.

List formats (one video per line):
  mp4:    `path label`   (any container ffmpeg decodes)
  pkl:    `path`         (label inside the pickle)  or `path label`
  frames: `folder num_frames label`
A path may contain spaces: the label (and frame count) are taken from the right.
A video that fails to decode yields None; `collate` drops it and counts it, so the
training and evaluation loops report how many failed and nothing vanishes silently.

Evaluation views (VALID/TEST/INFER keys num_clips, dense_sample, num_crops, keep_ratio):
an item holds V = num_clips * num_crops views, clip-major; with V > 1 its imgs are
`[V, seg_num, 3*seglen, S, S]` (the loops run the model on every view and average).
An item may carry a frame span (first, stop): the clip(s) are then sampled among those
frames only (windows along a long video).
"""
import logging
import os

import numpy as np
import paddle

from utils.config_utils import EVAL_DEFAULTS, AttrDict

from .sampling import eval_clip_indices, segment_indices
from .transforms import eval_views, normalize, train_transform
from .deadline import VideoTimeout, deadline
from .video_backends import FrameCountChanged, VideoDecodeError, open_video

logger = logging.getLogger(__name__)


class ListFileError(ValueError):
    """A bad list file or line; the message names the file and line."""


def parse_list(path, fmt, num_classes=None, need_label=True):
    """-> list of (video path, label, num_frames or None); label -1 where absent
    (inference lists, and pkl lists whose label is inside the pickle)."""
    if not os.path.isfile(path):
        raise ListFileError(f"list file not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    label_optional = not need_label or fmt == 'pkl'
    items = []
    with open(path, encoding='utf-8', newline=None) as f:  # newline=None: \r\n too
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            where = f"{path}:{lineno}"
            video, label, nframes = line, -1, None
            # the path may contain spaces: numbers are taken from the right
            parts = line.rsplit(None, 1)
            if len(parts) == 2 and _is_int(parts[1]):
                video, label = parts[0], int(parts[1])
            elif not label_optional:
                what = f"label '{parts[1]}' is not an integer" if len(parts) == 2 else "no label"
                raise ListFileError(f"{where}: {what} (expected 'path label')")
            if fmt == 'frames':
                parts = video.rsplit(None, 1)
                if len(parts) != 2 or not _is_int(parts[1]) or int(parts[1]) <= 0:
                    raise ListFileError(f"{where}: expected 'folder num_frames label'")
                video, nframes = parts[0], int(parts[1])
            if label >= 0 or not label_optional:
                if num_classes and not 0 <= label < num_classes:
                    raise ListFileError(f"{where}: label {label} outside [0, {num_classes})")
            if not os.path.isabs(video) and not os.path.exists(video):
                alt = os.path.join(base, video)  # also accept paths relative to the list
                video = alt if os.path.exists(alt) else video
            items.append((video, label, nframes))
    return items


def _is_int(text):
    try:
        int(text)
        return True
    except ValueError:
        return False


def clip_shape(cfg, section, views=False, online=False):
    """What the model takes for one item of cfg[section]: a clip [T, 3L, S, S]
    (T = MODEL.seg_num, L = MODEL.seglen, S = target_size); views: one reader item,
    [V, T, 3L, S, S] when the section takes V = num_clips * num_crops > 1 views; online:
    one frame [3, S, S] (the per-frame model)."""
    m, sec = cfg.MODEL, cfg[section]
    size = sec.target_size
    if online:
        return [3, size, size]
    count = sec.num_clips * sec.num_crops if views else 1
    return ([count] if count > 1 else []) + [m.seg_num, 3 * m.seglen, size, size]


class KineticsReader(paddle.io.Dataset):
    """Items -> (imgs float32 [seg_num, 3*seglen, S, S] or [V, seg_num, ...] (views),
    label int64 (-1 in infer mode), video path, item index).  `items`: (path, label,
    num_frames or None[, (first, stop) frame span]).  A failed video -> None (see `collate`)."""

    def __init__(self, mode, cfg, filelist=None, items=None):
        super().__init__()
        section = cfg[mode.upper()]
        m = cfg.MODEL
        self.mode, self.fmt = mode, m.format
        self.seg_num, self.seglen = m.seg_num, m.seglen
        self.mean, self.std = m.image_mean, m.image_std
        self.short_size, self.target_size = section.short_size, section.target_size
        self.clip_shape = clip_shape(cfg, mode.upper())  # one view: what the model takes
        # training takes one view of each video: the test protocol's defaults
        protocol = section if mode != 'train' else AttrDict(EVAL_DEFAULTS)
        self.num_clips, self.num_crops = protocol.num_clips, protocol.num_crops
        self.dense, self.keep_ratio = protocol.dense_sample, protocol.keep_ratio
        self.average = protocol.average  # how the loops merge the views
        self.video_timeout = section.video_timeout
        self.buf_size = section.buf_size  # clips the loader may read ahead
        self.decode_threads = 1  # FFmpeg threads per video (inference/core_plan.py sets it)
        self.seed, self.epoch = None, 0
        if items is None:
            filelist = filelist or section.filelist
            items = parse_list(filelist, self.fmt, m.num_classes, need_label=mode != 'infer')
        self.items = items

    def __len__(self):
        return len(self.items)

    def set_epoch(self, epoch, seed=None):
        """Randomness of item i in epoch e is a function of (seed, e, i) only, so it does
        not depend on which worker reads the item (reproducible with --fix_random_seed)."""
        self.epoch, self.seed = epoch, seed

    def _rng(self, index):
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.seed, self.epoch, index])

    def load_frames(self, index, rng):
        """-> (uint8 [seg_num*seglen, H, W, 3], label stored in the video or None);
        raises VideoDecodeError."""
        path, _, nframes = self.items[index][:3]
        span = self.items[index][3] if len(self.items[index]) > 3 else None
        video = open_video(path, self.fmt, nframes, self.decode_threads)
        try:
            return self.read(video, rng, span), getattr(video, 'label', None)
        finally:
            video.close()

    def read(self, video, rng, span=None):
        """The sampled frames of an open video (of `span`, or all of it) -> uint8
        [seg_num*seglen (x clips), H, W, 3]; raises VideoDecodeError."""
        count = video.num_frames
        for _ in range(3):
            indices = self.sample(count, rng, span)
            try:
                return video.get_frames(indices)
            except FrameCountChanged as e:  # header promised more frames than decode
                count = e.num_frames
        raise VideoDecodeError(f"{video.path}: frame count keeps changing")

    @property
    def num_views(self):
        return self.num_clips * self.num_crops

    def sample(self, count, rng, span=None):
        """Frame indices of every clip of one item, clip after clip."""
        first = 0
        if span is not None:
            first = min(span[0], count - 1)
            count = min(span[1], count) - first
        if self.mode == 'train':
            return [first + i for i in segment_indices(count, self.seg_num, self.seglen,
                                                       self.mode, rng)]
        # the original's pkl branch centred the seglen frames, its mp4 branch did not
        clips = eval_clip_indices(count, self.seg_num, self.seglen, self.num_clips, self.dense,
                                  centre_window=self.fmt == 'pkl')
        return [first + i for clip in clips for i in clip]

    def views(self, frames):
        """uint8 frames of every clip -> float32 [seg_num, 3L, S, S], or [V, ...] views."""
        per_clip = self.seg_num * self.seglen
        out = []
        for start in range(0, len(frames), per_clip):
            for view in eval_views(frames[start:start + per_clip], self.short_size,
                                   self.target_size, self.num_crops, self.keep_ratio):
                out.append(normalize(view, self.mean, self.std, self.seg_num, self.seglen))
        return out[0] if len(out) == 1 else np.stack(out)

    def __getitem__(self, index):
        path, label = self.items[index][:2]
        rng = self._rng(index)
        try:
            with deadline(self.video_timeout, hard=paddle.io.get_worker_info() is not None):
                frames, stored_label = self.load_frames(index, rng)
        except VideoDecodeError as e:
            logger.warning("skipping video: %s", e)
            return None
        except VideoTimeout:
            logger.warning("skipping video: %s: decoding took over %ss", path, self.video_timeout)
            return None
        if self.mode == 'train':
            frames = train_transform(frames, self.short_size, self.target_size, rng)
            imgs = normalize(frames, self.mean, self.std, self.seg_num, self.seglen)
        else:
            imgs = self.views(frames)
        if self.mode != 'infer' and label < 0 and stored_label is not None:
            label = int(stored_label)  # pkl lists may leave it to the pickle
        return imgs, np.int64(label), path, index


def collate(items):
    """Stack the items that decoded; count the ones that did not (already logged).

    -> {'imgs': [B, T, 3L, S, S] ([B, V, T, 3L, S, S] with V views), 'labels': [B]
        (-1 in infer mode), 'paths': [B], 'indices': [B] item indices in the dataset,
        'failed': number of videos of this batch that failed to decode}
    A batch where every video failed has `paths == []` and 1-element placeholders
    (zero-size arrays cannot cross the workers' shared memory)."""
    ok = [it for it in items if it is not None]
    batch = {'failed': np.array(len(items) - len(ok), dtype=np.int64), 'paths': []}
    if not ok:
        batch.update(imgs=np.zeros([1], np.float32), labels=np.full([1], -1, np.int64),
                     indices=np.full([1], -1, np.int64))
        return batch
    batch['imgs'] = np.stack([it[0] for it in ok])
    batch['paths'] = [it[2] for it in ok]
    batch['labels'] = np.array([it[1] for it in ok], dtype=np.int64)
    batch['indices'] = np.array([it[3] for it in ok], dtype=np.int64)
    return batch
