"""Transforms as small pure functions over uint8 frames [T, H, W, 3] (RGB).

All frames of a clip get the same geometry (one crop box, one flip), as the original.
Every resize is Pillow's BILINEAR, as the original's: when it shrinks, Pillow widens the
filter with the reduction and so averages over the source pixels, which OpenCV's
INTER_LINEAR does not (far apart on real 720p and 1080p clips: docs/protocols.md#resizing),
and the released weights were trained on Pillow-resized frames.
"""
import functools

import cv2
import numpy as np
from PIL import Image

MULTI_SCALES = (1, .875, .75, .66)


def resize(frames, width, height):
    """uint8 [T, H, W, 3] -> [T, height, width, 3], each frame through Pillow's BILINEAR
    (`Image.resize((w, h), Image.BILINEAR)`, the original's call)."""
    if frames.shape[1] == height and frames.shape[2] == width:
        return frames  # Pillow returns a copy of the same pixels
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR))
                     for f in frames])


def scale_size(height, width, short_size, keep_ratio=False):
    """(out_h, out_w).  The original forced 4:3 (256 x 341) whenever the short side
    was not already `short_size`; keep_ratio scales the short side and keeps the aspect."""
    if min(height, width) == short_size:
        return height, width
    if keep_ratio:
        if width < height:
            return int(round(height * short_size / width)), short_size
        return short_size, int(round(width * short_size / height))
    long_size = int(short_size * 4.0 / 3.0)
    return (long_size, short_size) if width < height else (short_size, long_size)


def group_scale(frames, short_size, keep_ratio=False):
    h, w = scale_size(frames.shape[1], frames.shape[2], short_size, keep_ratio)
    return resize(frames, w, h)


def crop(frames, x, y, w, h):
    return frames[:, y:y + h, x:x + w]


def multi_scale_crop_box(width, height, input_size, rng, scales=MULTI_SCALES, max_distort=1):
    """TSN's multi-scale crop with 13 fixed offsets: (x, y, w, h) of the crop, the offsets
    floats, as the original's `(image_w - crop_w) / 4` steps are (see `pixel_box`)."""
    base = min(width, height)
    sizes = [int(base * s) for s in scales]
    crop_h = [input_size if abs(s - input_size) < 3 else s for s in sizes]
    crop_w = [input_size if abs(s - input_size) < 3 else s for s in sizes]
    pairs = [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w)
             if abs(i - j) <= max_distort]
    cw, ch = pairs[int(rng.integers(len(pairs)))]
    offsets = fixed_offsets(width, height, cw, ch)
    x, y = offsets[int(rng.integers(len(offsets)))]
    return x, y, cw, ch


def pixel_box(x, y, w, h):
    """A float box -> the pixels PIL's `crop((x, y, x + w, y + h))` takes: each edge rounded
    on its own with Python's round (half to even), so an odd-sized crop at a .5 offset comes
    out one pixel wider or narrower, as in the original."""
    left, top = round(x), round(y)
    return left, top, round(x + w) - left, round(y + h) - top


def fixed_offsets(width, height, crop_w, crop_h):
    """The 13 offsets of TSN's `more_fix_crop` (corners, centre, edge centres, quarters)."""
    ws, hs = (width - crop_w) / 4, (height - crop_h) / 4
    ret = [(0, 0)]
    if ws != 0:
        ret.append((4 * ws, 0))
    if hs != 0:
        ret.append((0, 4 * hs))
    if hs != 0 and ws != 0:
        ret.append((4 * ws, 4 * hs))
    if hs != 0 or ws != 0:
        ret.append((2 * ws, 2 * hs))
    ret += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
            (1 * ws, 1 * hs), (3 * ws, 1 * hs), (1 * ws, 3 * hs), (3 * ws, 3 * hs)]
    return ret


def multi_scale_crop(frames, size, rng):
    """Crop at a random scale and offset, then resize to size x size (the original's order)."""
    box = pixel_box(*multi_scale_crop_box(frames.shape[2], frames.shape[1], size, rng))
    return resize(crop(frames, *box), size, size)


def random_crop(frames, size, rng):
    h, w = frames.shape[1:3]
    if w < size or h < size:
        raise ValueError(f"frame {w}x{h} is smaller than the crop {size}")
    x = 0 if w == size else int(rng.integers(0, w - size + 1))
    y = 0 if h == size else int(rng.integers(0, h - size + 1))
    return crop(frames, x, y, size, size)


def center_crop_box(width, height, size):
    return int(round((width - size) / 2.)), int(round((height - size) / 2.)), size, size


def center_crop(frames, size):
    return crop(frames, *center_crop_box(frames.shape[2], frames.shape[1], size))


def random_flip(frames, rng):
    return frames[:, :, ::-1] if rng.random() < 0.5 else frames


def normalize(frames, mean, std, seg_num, seglen):
    """uint8 [T*L, H, W, 3] -> float32 [seg_num, 3*seglen, H, W], (x/255 - mean) / std.
    A uint8 channel has 256 values: the formula is computed once for each (the same
    float32 operations, so the same bits) and looked up per pixel with OpenCV's LUT,
    much faster than the arithmetic over every pixel (docs/training.md#reading-videos)."""
    if frames.dtype != np.uint8:
        x = (frames.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) \
            / np.asarray(std, np.float32)
        x = x.transpose(0, 3, 1, 2)  # [T*L, H, W, 3] -> [T*L, 3, H, W]
        return np.ascontiguousarray(x.reshape(seg_num, seglen * 3, *x.shape[2:]))
    table = normalize_table(tuple(mean), tuple(std))
    planes = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))  # -> [T*L, 3, H, W] uint8
    out = np.empty(planes.shape, np.float32)
    for t in range(planes.shape[0]):
        for c in range(3):
            cv2.LUT(planes[t, c], table[c], dst=out[t, c])
    return out.reshape(seg_num, seglen * 3, *out.shape[2:])  # -> [T, 3L, H, W]


@functools.lru_cache(maxsize=8)
def normalize_table(mean, std):
    """float32 [3, 1, 256]: (v/255 - mean[c]) / std[c] for every uint8 value v."""
    x = np.arange(256, dtype=np.uint8).astype(np.float32)[None, :] / 255.0  # [1, 256]
    x = (x - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]
    return np.ascontiguousarray(x[:, None, :])  # [3, 256] -> [3, 1, 256]: OpenCV's table shape


def train_transform(frames, short_size, target_size, rng):
    frames = group_scale(frames, short_size)
    frames = multi_scale_crop(frames, short_size, rng)
    frames = random_crop(frames, target_size, rng)
    return random_flip(frames, rng)


def eval_transform(frames, short_size, target_size):
    return center_crop(group_scale(frames, short_size), target_size)


# ---- test-time views: crops per clip (boxes are (x, y, w, h)) ----

CROP_COUNTS = (1, 3, 10)


def three_crop_boxes(width, height, size):
    """MIT's GroupFullResSample (its 3-crop test): size x size squares at the two ends and
    the middle of the long side, vertically (horizontally) centred, with the steps
    `(side - size) // 4` it uses: landscape left, right, centre; portrait top, bottom,
    centre.  (MIT shifts along the width only, so its 3 crops of a portrait video are one
    crop three times; here they go along the height.)  With size = short side
    (`--full_res`), these are mmaction2's ThreeCrop boxes on 4:3 frames."""
    ws, hs = (width - size) // 4, (height - size) // 4
    if width >= height:
        return [(0, 2 * hs, size, size), (4 * ws, 2 * hs, size, size),
                (2 * ws, 2 * hs, size, size)]
    return [(2 * ws, 0, size, size), (2 * ws, 4 * hs, size, size),
            (2 * ws, 2 * hs, size, size)]


def five_crop_boxes(width, height, size):
    """The 4 corners and the centre, with steps `(side - size) // 4` (MIT's
    GroupOverSample, mmaction2's TenCrop): upper left, upper right, lower left, lower
    right, centre."""
    ws, hs = (width - size) // 4, (height - size) // 4
    return [(0, 0, size, size), (4 * ws, 0, size, size), (0, 4 * hs, size, size),
            (4 * ws, 4 * hs, size, size), (2 * ws, 2 * hs, size, size)]


def view_boxes(width, height, size, num_crops):
    """-> [(x, y, w, h, flip)] for 1 (centre crop, as the model zoo), 3 (three_crop_boxes)
    or 10 crops (five_crop_boxes, each followed by its horizontal flip, as TenCrop)."""
    if num_crops == 1:
        return [center_crop_box(width, height, size) + (False,)]
    if num_crops == 3:
        return [box + (False,) for box in three_crop_boxes(width, height, size)]
    if num_crops == 10:
        return [box + (flip,) for box in five_crop_boxes(width, height, size)
                for flip in (False, True)]
    raise ValueError(f"num_crops must be one of {CROP_COUNTS}, got {num_crops}")


def eval_views(frames, short_size, target_size, num_crops=1, keep_ratio=False):
    """uint8 frames of one clip -> list of num_crops uint8 [T, S, S, 3] views."""
    frames = group_scale(frames, short_size, keep_ratio)
    h, w = frames.shape[1:3]
    if min(h, w) < target_size:
        raise ValueError(f"frame {w}x{h} is smaller than the crop {target_size}")
    views = []
    for x, y, cw, ch, flip in view_boxes(w, h, target_size, num_crops):
        view = crop(frames, x, y, cw, ch)
        views.append(view[:, :, ::-1] if flip else view)
    return views


def frame_input(frame, section, model_cfg):
    """One RGB uint8 frame [H, W, 3] -> the online model's input float32 [1, 3, S, S]:
    the section's scaling and centre crop, then the model's normalisation (predict.py
    --online and the server's camera mode).  ValueError when smaller than the crop."""
    view = eval_views(frame[None], section.short_size, section.target_size, 1,
                      section.keep_ratio)[0]  # [1, S, S, 3]
    return normalize(view, model_cfg.image_mean, model_cfg.image_std, 1, 1)  # -> [1, 3, S, S]
