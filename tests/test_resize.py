"""Resizing as the original did: every frame the reader resizes equals Pillow's BILINEAR
resize of it, done here independently (`PIL.Image.fromarray(f).resize(..., BILINEAR)`),
and PIL's own rounding of float crop boxes; OpenCV's INTER_LINEAR gives other pixels."""
import cv2
import numpy as np
import pytest
from PIL import Image

from reader import get_reader
from reader.transforms import group_scale, multi_scale_crop, pixel_box, train_transform
from testing.media import make_clip, write_video
from testing.tiny import TINY, write_config
from utils.config_utils import parse_config


def pil_resize(frame, width, height):
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def pil_oracle(frames, *steps):
    """Apply PIL operations (callables on a PIL image) to every frame -> uint8 array."""
    out = []
    for f in frames:
        img = Image.fromarray(f)
        for step in steps:
            img = step(img)
        out.append(np.asarray(img))
    return np.stack(out)


class Draws:
    """A stand-in for np.random.Generator that returns the draws given, in order."""

    def __init__(self, integers, randoms=()):
        self._ints, self._floats = iter(integers), iter(randoms)

    def integers(self, low, high=None):
        return next(self._ints)

    def random(self):
        return next(self._floats)


def detailed_frames(n, height, width, seed=0):
    """Frames with fine detail (noise over a gradient): what averaging changes most."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 160, width)[None, :, None]
    noise = rng.integers(0, 96, (n, height, width, 3))
    return (ramp + noise).astype(np.uint8)


@pytest.mark.parametrize('h,w,out_h,out_w', [
    (720, 1280, 256, 341),   # downscale, landscape: forced 4:3 as the original
    (1280, 720, 341, 256),   # downscale, portrait
    (120, 160, 256, 341),    # upscale
])
def test_group_scale_is_pillow_bilinear(h, w, out_h, out_w):
    frames = detailed_frames(2, h, w)
    got = group_scale(frames, 256)
    assert got.shape == (2, out_h, out_w, 3) and got.dtype == np.uint8
    expected = np.stack([pil_resize(f, out_w, out_h) for f in frames])
    np.testing.assert_array_equal(got, expected)


def test_downscale_differs_from_opencv_linear():
    """The test above could fail: OpenCV's bilinear samples 4 pixels where Pillow averages
    over the ~3.75 x 2.8 source pixels each output pixel covers."""
    frames = detailed_frames(1, 720, 1280)
    opencv = cv2.resize(frames[0], (341, 256), interpolation=cv2.INTER_LINEAR)
    diff = np.abs(group_scale(frames, 256)[0].astype(int) - opencv)
    assert diff.max() > 20


def test_multi_scale_crop_rounds_the_box_as_pil_and_resizes_with_pil():
    """A 403x300 frame, size 300: crop sizes int(300 * s) = 300, 262, 225, 198; pair 6 is
    (225, 225); offset 9 is the upper-left quarter (w_step, h_step) = (178/4, 75/4) =
    (44.5, 18.75).  PIL rounds each edge: x 44..270 (round(269.5) = 270, half to even), a
    226-pixel-wide crop, y 19..244."""
    assert pixel_box(44.5, 18.75, 225, 225) == (44, 19, 226, 225)
    frames = detailed_frames(2, 300, 403, seed=1)
    got = multi_scale_crop(frames, 300, Draws([6, 9]))
    expected = pil_oracle(frames, lambda im: im.crop((44.5, 18.75, 269.5, 243.75)),
                          lambda im: im.resize((300, 300), Image.BILINEAR))
    assert got.shape == (2, 300, 300, 3)
    np.testing.assert_array_equal(got, expected)


def test_train_transform_equals_the_original_pil_pipeline():
    """480x640 -> 256x341 (scale), multi-scale crop pair 4 = (192, 224) (w, h) at offset 7
    = lower centre (2 * 149/4, 4 * 32/4) = (74.5, 32), resized to 256x256, random 224 crop
    at (x, y) = (5, 17), flipped (draw 0.2 < 0.5): the original's group_scale,
    group_multi_scale_crop, group_random_crop and group_random_flip written with PIL."""
    frames = detailed_frames(3, 480, 640, seed=2)
    got = train_transform(frames, 256, 224, Draws([4, 7, 5, 17], [0.2]))
    expected = pil_oracle(
        frames, lambda im: im.resize((341, 256), Image.BILINEAR),
        lambda im: im.crop((74.5, 32, 74.5 + 192, 32 + 224)),
        lambda im: im.resize((256, 256), Image.BILINEAR),
        lambda im: im.crop((5, 17, 5 + 224, 17 + 224)),
        lambda im: im.transpose(Image.FLIP_LEFT_RIGHT))
    np.testing.assert_array_equal(got, expected)


def test_reader_frames_are_pillow_resized(tmp_path):
    """Through KineticsReader (valid mode): 48x64 frames scaled to 36x48, centre crop 32
    at x = round((48 - 32) / 2) = 8, y = 2, against Pillow on the decoded frames."""
    clip = make_clip(20)
    path = write_video(tmp_path / 'clip.avi', clip)  # lossless
    (tmp_path / 'v.list').write_text(f"{path} 1\n")
    cfg = parse_config(write_config(tmp_path / 'c.yaml', TINY))
    imgs = get_reader('TSM', 'valid', cfg, filelist=str(tmp_path / 'v.list'))[0][0]
    mean = np.array(cfg.MODEL.image_mean, np.float32)
    std = np.array(cfg.MODEL.image_std, np.float32)
    for seg, frame_idx in enumerate([2, 7, 12, 17]):  # (5 - 1) // 2 + 5i
        expected = pil_resize(clip[frame_idx], 48, 36)[2:34, 8:40]
        got = (imgs[seg].transpose(1, 2, 0) * std + mean) * 255
        np.testing.assert_allclose(got, expected, atol=1e-3)
