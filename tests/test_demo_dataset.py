"""Tests of the synthetic frame-order demo dataset (data/demo_dataset.py)."""

import collections
import json
import os

import numpy as np
import pytest

from data import demo_dataset as dd

TINY = dict(num_train_per_class=2, num_val_per_class=1, num_frames=8,
            size=32, seed=3, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    info = dd.generate(str(out), **TINY)
    assert info["skipped"] is False
    return info


def _rows(path):
    with open(path) as f:
        return [ln.rstrip("\n") for ln in f if ln.strip()]


def _parse(path):
    rows = []
    for ln in _rows(path):
        parts = ln.split(" ")
        assert len(parts) == 2, ln
        rows.append((parts[0], int(parts[1])))
    return rows


# ---------------------------------------------------------------- rendering

def test_classes_form_four_reversal_pairs():
    assert len(dd.CLASSES) == 8 and len(set(dd.CLASSES)) == 8
    assert dd.PAIRS == [(0, 1), (2, 3), (4, 5), (6, 7)]


@pytest.mark.parametrize("ci", range(8))
def test_render_clip_shape_dtype(ci):
    clip = dd.render_clip(ci, np.random.default_rng(0), 8, 32)
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    # the clip actually changes over time and is not a palindrome, so the
    # frame order carries information
    assert not np.array_equal(clip, clip[::-1])
    assert np.abs(clip[0].astype(int) - clip[-1]).mean() > 3


@pytest.mark.parametrize("a,b", dd.PAIRS)
def test_pair_is_exact_time_reversal(a, b):
    for seed in range(4):
        fa = dd.render_clip(a, np.random.default_rng(seed), 16, 32)
        fb = dd.render_clip(b, np.random.default_rng(seed), 16, 32)
        np.testing.assert_array_equal(fb, fa[::-1])
    # int seeds are accepted too
    np.testing.assert_array_equal(dd.render_clip(b, 7, 8, 32),
                                  dd.render_clip(a, 7, 8, 32)[::-1])


@pytest.mark.parametrize("a,b", dd.PAIRS)
def test_order_blind_statistics_cannot_separate_pair(a, b):
    """The multiset of frames of a class-B clip equals that of the class-A
    clip it is reversed from, so any order-less feature (mean of per-frame
    features, as in TSN) is identical: a pair is at chance for TSN."""
    fa = dd.render_clip(a, np.random.default_rng(11), 16, 32)
    fb = dd.render_clip(b, np.random.default_rng(11), 16, 32)
    assert sorted(f.tobytes() for f in fa) == sorted(f.tobytes() for f in fb)
    np.testing.assert_array_equal(fa.astype(np.int64).sum(0),
                                  fb.astype(np.int64).sum(0))
    # ... while an order-aware statistic differs (first vs last frame)
    assert not np.array_equal(fa[0], fb[0])


def test_default_frames_give_reversal_symmetric_sampling():
    """Centre-of-segment sampling of 8 segments (TSN/TSM test mode) picks a
    mirror-symmetric index set for the default clip length, so reversing a
    clip does not change which frames the model sees."""
    t, nseg = dd.DEFAULT_NUM_FRAMES, 8
    dur = t // nseg
    idx = [(dur - 1) // 2 + i * dur for i in range(nseg)]
    assert sorted(t - 1 - i for i in idx) == idx
    assert t % nseg == 0


def test_render_deterministic_per_seed():
    x1 = dd.render_dataset_clip(5, "train", 2, 1, 8, 32)
    x2 = dd.render_dataset_clip(5, "train", 2, 1, 8, 32)
    np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(x1, dd.render_dataset_clip(6, "train", 2, 1,
                                                         8, 32))
    assert not np.array_equal(x1, dd.render_dataset_clip(5, "val", 2, 1,
                                                         8, 32))
    assert not np.array_equal(x1, dd.render_dataset_clip(5, "train", 2, 0,
                                                         8, 32))
    # the odd class of a pair is an independent sample, not the reversal
    # of the same-index even-class video
    x3 = dd.render_dataset_clip(5, "train", 3, 1, 8, 32)
    assert not np.array_equal(x3, x1[::-1])


# ---------------------------------------------------------------- files

def test_list_files_balanced_and_valid(tiny):
    for key, n in (("train_list", TINY["num_train_per_class"]),
                   ("val_list", TINY["num_val_per_class"])):
        rows = _parse(tiny[key])
        counts = collections.Counter(label for _, label in rows)
        assert counts == {c: n for c in range(8)}
        for path, label in rows:
            assert os.path.isabs(path) and os.path.isfile(path)
            assert os.path.basename(path).startswith(dd.CLASSES[label] + "_")
    train = {p for p, _ in _parse(tiny["train_list"])}
    val = _parse(tiny["val_list"])
    assert not train & {p for p, _ in val}
    infer = _parse(tiny["infer_list"])
    assert infer and set(infer) <= set(val)
    assert {label for _, label in infer} == set(range(8))
    assert _rows(tiny["label_list"]) == dd.CLASSES
    with open(tiny["meta"]) as f:
        meta = json.load(f)
    assert meta["params"]["size"] == TINY["size"]
    assert meta["params"]["num_frames"] == TINY["num_frames"]


def test_videos_decode_and_match_rendering(tiny):
    t, s = TINY["num_frames"], TINY["size"]
    errs = []
    for split, key in (("train", "train_list"), ("val", "val_list")):
        seen = collections.Counter()
        for path, label in _parse(tiny[key]):
            k = int(os.path.basename(path)[:-4].rsplit("_", 1)[1])
            seen[label] += 1
            dec = dd.read_video(path)
            assert dec.shape == (t, s, s, 3), path
            ref = dd.render_dataset_clip(TINY["seed"], split, label, k, t, s)
            err = np.abs(dec.astype(np.float32) - ref).mean()
            assert err < 12.0, (path, err)
            errs.append(err)
    assert np.mean(errs) < 7.0


def test_generation_deterministic_at_decoded_frame_level(tiny, tmp_path):
    args = dict(TINY, num_train_per_class=1, num_val_per_class=1)
    dd.generate(str(tmp_path / "a"), **args)
    dd.generate(str(tmp_path / "b"), **dict(args, seed=args["seed"] + 1))
    for name in ("moving_down_0.mp4", "merging_0.mp4"):
        same = dd.read_video(os.path.join(tiny["out_dir"], "videos", "val",
                                          name))
        again = dd.read_video(str(tmp_path / "a" / "videos" / "val" / name))
        other = dd.read_video(str(tmp_path / "b" / "videos" / "val" / name))
        np.testing.assert_array_equal(same, again)
        assert not np.array_equal(same, other)


def test_skip_when_complete_and_regenerate_when_changed(tmp_path):
    args = dict(TINY, num_train_per_class=1, num_val_per_class=1)
    out = str(tmp_path / "d")
    info = dd.generate(out, **dict(args, num_train_per_class=2))
    stale = _parse(info["train_list"])[1][0]
    assert stale.endswith("_1.mp4")
    info = dd.generate(out, **args)
    assert info["skipped"] is False
    assert not os.path.exists(stale)  # videos of the old run are removed
    video = _parse(info["train_list"])[0][0]
    mtime = os.stat(video).st_mtime_ns
    assert dd.generate(out, **args)["skipped"] is True
    assert os.stat(video).st_mtime_ns == mtime
    # different parameters -> regenerated
    info2 = dd.generate(out, **dict(args, num_train_per_class=2, size=16))
    assert info2["skipped"] is False
    assert dd.read_video(video).shape[1:3] == (16, 16)
    assert len(_parse(info2["train_list"])) == 16
    # a missing video -> incomplete -> regenerated
    os.remove(video)
    assert dd.generate(out, **dict(args, num_train_per_class=2,
                                   size=16))["skipped"] is False
    assert os.path.isfile(video)


@pytest.mark.skipif(not dd._h264_available(), reason="no ffmpeg/libx264")
def test_intra_only_h264_keeps_reversal_exact(tmp_path):
    """Every frame is coded on its own, so decoding the reversed clip gives
    the reversed decoded clip: the codec leaks no time direction."""
    clip = dd.render_clip(0, np.random.default_rng(1), 8, 32)
    fwd, bwd = str(tmp_path / "f.mp4"), str(tmp_path / "b.mp4")
    dd.write_video(fwd, clip, codec="h264")
    dd.write_video(bwd, clip[::-1], codec="h264")
    np.testing.assert_array_equal(dd.read_video(bwd),
                                  dd.read_video(fwd)[::-1])


def test_mp4v_fallback_writes_decodable_video(tmp_path):
    clip = dd.render_clip(4, np.random.default_rng(2), 8, 32)
    path = str(tmp_path / "m.mp4")
    dd.write_video(path, clip, codec="mp4v")
    dec = dd.read_video(path)
    assert dec.shape == clip.shape
    assert np.abs(dec.astype(np.float32) - clip).mean() < 20.0


def test_cli(tmp_path, capsys):
    out = str(tmp_path / "cli")
    info = dd.main(["--out_dir", out, "--train_per_class", "1",
                    "--val_per_class", "1", "--seed", "1", "--size", "16",
                    "--frames", "8", "--no_progress"])
    assert info["skipped"] is False
    assert len(_rows(os.path.join(out, "train.list"))) == 8
    assert "generated" in capsys.readouterr().out
