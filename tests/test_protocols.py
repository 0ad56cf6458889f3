"""Test-time protocols: clips (uniform, dense), crops (1, 3, 10), views of a real decoded
video, view averaging (prob vs logit), and eval.py end to end with several views.
Expected indices and boxes are worked out by hand in the comments."""
import csv
import json
import re

import numpy as np
import paddle
import pytest

from metrics import average_views, nll
from models import get_model, load_weights
from reader import get_reader
from reader.sampling import (dense_clip_indices, eval_clip_indices, segment_indices,
                             uniform_clip_indices, window_spans)
from reader.transforms import normalize, view_boxes
from testing.media import make_clip, write_video
from testing.tiny import TINY, tiny_sections, write_config
from tests.conftest import run_cli
from utils.config_utils import ConfigError, parse_config
from training.evaluate import video_log_probs


# ---- clips ----

@pytest.mark.parametrize('n,seg,seglen,clips,expected', [
    # average_dur 10; clip k at ((2k+1)*10 - 1) // 4: 9//4 = 2, 29//4 = 7
    (40, 4, 1, 2, [[2, 12, 22, 32], [7, 17, 27, 37]]),
    # 3 clips: 9//6 = 1, 29//6 = 4, 49//6 = 8 (points 1.67, 5, 8.33 of each segment)
    (40, 4, 1, 3, [[1, 11, 21, 31], [4, 14, 24, 34], [8, 18, 28, 38]]),
    # average_dur 5, seglen 2: offsets 4//4 = 1 and 14//4 = 3, then 2 consecutive frames
    (20, 4, 2, 2, [[1, 2, 6, 7, 11, 12, 16, 17], [3, 4, 8, 9, 13, 14, 18, 19]]),
    # one clip is the model zoo's (average_dur - 1) // 2: 250 // 8 = 31 -> 15 + 31i
    (250, 8, 1, 1, [[15, 46, 77, 108, 139, 170, 201, 232]]),
    # too short for the segments: every clip takes i (mod 3)
    (3, 4, 1, 2, [[0, 1, 2, 0], [0, 1, 2, 0]]),
])
def test_uniform_clips(n, seg, seglen, clips, expected):
    assert uniform_clip_indices(n, seg, seglen, clips) == expected
    assert eval_clip_indices(n, seg, seglen, clips, dense=False) == expected


def test_one_uniform_clip_is_the_model_zoo_sampling():
    for n in range(1, 120):
        for seglen in (1, 2):
            assert uniform_clip_indices(n, 8, seglen, 1) == [segment_indices(n, 8, seglen, 'test')]


def test_dense_clips_mit():
    # 250 frames: sample_pos = 1 + 250 - 64 = 187, stride 64 // 8 = 8, starts
    # linspace(0, 186, 10) = 0, 20.7, 41.3, 62, 82.7, 103.3, 124, 144.7, 165.3, 186 (truncated)
    clips = dense_clip_indices(250, 8, 1, 10)
    assert [c[0] for c in clips] == [0, 20, 41, 62, 82, 103, 124, 144, 165, 186]
    assert clips[0] == [0, 8, 16, 24, 32, 40, 48, 56]
    assert clips[1] == [20, 28, 36, 44, 52, 60, 68, 76]
    assert clips[9] == [186, 194, 202, 210, 218, 226, 234, 242]
    # one clip: the window in the middle, start (187 - 1) // 2 = 93
    assert dense_clip_indices(250, 8, 1, 1) == [[93, 101, 109, 117, 125, 133, 141, 149]]
    # 40 frames < 64: sample_pos 1, every clip starts at 0, indices wrap modulo 40
    assert dense_clip_indices(40, 8, 1, 10) == [[0, 8, 16, 24, 32, 0, 8, 16]] * 10
    # 16 segments: stride 4; seglen 2 takes consecutive frames
    assert dense_clip_indices(100, 16, 1, 2)[1][:4] == [36, 40, 44, 48]  # start 36 = 1+100-64-1
    assert dense_clip_indices(100, 4, 2, 2)[0] == [0, 1, 16, 17, 32, 33, 48, 49]
    assert eval_clip_indices(250, 8, 1, 10, dense=True) == clips


def test_window_spans():
    # 250 frames at 25 fps = 10 s; 4 s windows every 4 s: the last cut at 10 s
    assert window_spans(250, 25, 4, 4) == [(0, 100, 0, 4), (100, 200, 4, 8), (200, 250, 8, 10)]
    # overlapping windows every 2 s: the 4th reaches the end
    assert window_spans(250, 25, 4, 2) == [(0, 100, 0, 4), (50, 150, 2, 6), (100, 200, 4, 8),
                                           (150, 250, 6, 10)]
    # 4.5 s, 2 s windows: 0.5 s would be left after [2, 4): stretched to the end
    assert window_spans(45, 10, 2, 2) == [(0, 20, 0, 2), (20, 45, 2, 4.5)]
    assert window_spans(10, 25, 4, 4) == [(0, 10, 0, 0.4)]  # shorter than a window
    with pytest.raises(ValueError, match='frame rate'):
        window_spans(10, None, 4, 4)


# ---- crops ----

@pytest.mark.parametrize('w,h,size,crops,expected', [
    # centre: ((341-224)/2 = 58.5 -> round 58, (256-224)/2 = 16)
    (341, 256, 224, 1, [(58, 16, False)]),
    # full resolution 3 crops: steps (341-256)//4 = 21, 0 -> left 0, right 84, centre 42
    (341, 256, 256, 3, [(0, 0, False), (84, 0, False), (42, 0, False)]),
    # portrait (keep_ratio): steps 0, (455-256)//4 = 49 -> top 0, bottom 196, centre 98
    (256, 455, 256, 3, [(0, 0, False), (0, 196, False), (0, 98, False)]),
    # 224 crops: steps (341-224)//4 = 29, (256-224)//4 = 8: y centred at 2*8
    (341, 256, 224, 3, [(0, 16, False), (116, 16, False), (58, 16, False)]),
    # 10 crops: corners (0,0) (116,0) (0,32) (116,32), centre (58,16), each then flipped
    (341, 256, 224, 10, [(0, 0, False), (0, 0, True), (116, 0, False), (116, 0, True),
                         (0, 32, False), (0, 32, True), (116, 32, False), (116, 32, True),
                         (58, 16, False), (58, 16, True)]),
    # 16:9 kept: steps (455-224)//4 = 57, 8
    (455, 256, 224, 10, [(0, 0, False), (0, 0, True), (228, 0, False), (228, 0, True),
                         (0, 32, False), (0, 32, True), (228, 32, False), (228, 32, True),
                         (114, 16, False), (114, 16, True)]),
])
def test_view_boxes(w, h, size, crops, expected):
    assert [(x, y, f) for x, y, _, _, f in view_boxes(w, h, size, crops)] == expected
    assert all(bw == size and bh == size for _, _, bw, bh, _ in view_boxes(w, h, size, crops))


def test_config_keys_are_checked(tmp_path):
    ok = {'TEST': {'num_clips': 10, 'dense_sample': True, 'num_crops': 3, 'keep_ratio': True,
                   'average': 'logit'}, 'VALID': {'num_crops': 10}, 'INFER': {'num_clips': 2}}
    cfg = parse_config(write_config(tmp_path / 'ok.yaml', ok))
    assert cfg.TEST.num_clips == 10 and cfg.VALID.num_crops == 10 and cfg.INFER.average == 'prob'
    for section, key, value, match in [('TEST', 'num_crops', 5, r'one of \[1, 3, 10\]'),
                                       ('TEST', 'average', 'mean', 'one of'),
                                       ('VALID', 'num_clips', 0, 'must be positive'),
                                       ('INFER', 'dense_sample', 'yes', 'boolean'),
                                       ('TRAIN', 'num_clips', 2, 'unknown key')]:
        with pytest.raises(ConfigError, match=match):
            parse_config(write_config(tmp_path / 'bad.yaml', {section: {key: value}}))


# ---- views of a decoded video ----

def test_views_are_the_right_frames_and_crops(tmp_path):
    """20 lossless frames 48x64 (short side 48: no scaling), 4 segments, 2 clips x 10
    crops of 32: clips [1, 6, 11, 16] and [3, 8, 13, 18] (average_dur 5: offsets 4//4 = 1
    and 14//4 = 3); boxes with steps (64-32)//4 = 8, (48-32)//4 = 4: (0,0) (32,0) (0,16)
    (32,16) (16,8), each followed by its flip."""
    frames = make_clip(20, 48, 64)
    path = write_video(tmp_path / 'v.avi', frames)
    sections = tiny_sections()
    sections['TEST'].update(short_size=48, target_size=32, num_clips=2, num_crops=10,
                            keep_ratio=True)
    cfg = parse_config(write_config(tmp_path / 'c.yaml', sections))
    ds = get_reader('TSM', 'test', cfg, items=[(path, 1, None)])
    imgs, label, got_path, index = ds[0]
    assert imgs.shape == (20, 4, 3, 32, 32) and label == 1 and got_path == path and index == 0
    boxes = [(0, 0), (32, 0), (0, 16), (32, 16), (16, 8)]
    m = cfg.MODEL
    for c, idx in enumerate([[1, 6, 11, 16], [3, 8, 13, 18]]):
        for b, (x, y) in enumerate(boxes):
            for flip in (0, 1):
                want = frames[idx, y:y + 32, x:x + 32]
                want = want[:, :, ::-1] if flip else want
                v = c * 10 + 2 * b + flip
                np.testing.assert_allclose(imgs[v], normalize(want, m.image_mean, m.image_std,
                                                              4, 1), atol=1e-6)
    # the first view's corner block names its frames (frame_pattern writes the index there)
    pix = imgs[0, :, 0, 0, 0] * m.image_std[0] + m.image_mean[0]
    assert np.round(pix * 255).tolist() == [1, 6, 11, 16]
    # one view keeps the old item shape
    sections['TEST'].update(num_clips=1, num_crops=1)
    cfg1 = parse_config(write_config(tmp_path / 'c1.yaml', sections))
    assert get_reader('TSM', 'test', cfg1, items=[(path, 1, None)])[0][0].shape == (4, 3, 32, 32)


def test_window_span_samples_inside_the_window(tmp_path):
    cfg = parse_config(write_config(tmp_path / 'c.yaml', TINY))
    ds = get_reader('TSM', 'infer', cfg, items=[('x.avi', -1, 45, (20, 45))])
    # 25 frames of the window, 4 segments: average_dur 6 -> 2 + 6i, then + 20
    assert ds.sample(45, None, (20, 45)) == [22, 28, 34, 40]
    assert ds.sample(45, None) == [5, 16, 27, 38]  # whole video: average_dur 11 -> 5 + 11i


# ---- averaging over views ----

def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_prob_and_logit_averaging():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 4)) * 3
    np.testing.assert_allclose(np.exp(average_views(logits, 'prob')),
                               softmax(logits).mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(np.exp(average_views(logits, 'logit')),
                               softmax(logits.mean(axis=1)), rtol=1e-10)
    one = logits[:, :1]
    np.testing.assert_allclose(average_views(one, 'prob'), average_views(one, 'logit'))
    # they can disagree: one confident view against two moderate ones
    views = np.array([[[10.0, 0.0], [0.0, 3.0], [0.0, 3.0]]])
    assert average_views(views, 'logit').argmax() == 0  # mean logits (3.33, 2)
    assert average_views(views, 'prob').argmax() == 1   # mean probs (0.365, 0.635)
    assert nll(average_views(views, 'prob'), np.array([1])) == pytest.approx(
        -np.log(softmax(views[0]).mean(axis=0)[1]))


class ConstantLogits(paddle.nn.Layer):
    """A clip [T, C, H, W] filled with c -> logits (c, -c, 2c): reveals the view order."""

    def forward(self, x):
        c = x.mean(axis=[1, 2, 3, 4])
        return paddle.stack([c, -c, 2 * c], axis=1)


def test_views_are_averaged_per_video():
    vals = np.array([[0.5, -1.0, 2.0], [3.0, 0.1, -0.2]], np.float32)  # [B=2, V=3]
    imgs = np.broadcast_to(vals[:, :, None, None, None, None], (2, 3, 2, 3, 4, 4)).copy()
    logits = np.stack([vals, -vals, 2 * vals], axis=-1)  # [B, V, K]
    for average in ('prob', 'logit'):
        got = video_log_probs(ConstantLogits(), paddle.to_tensor(imgs), average)
        np.testing.assert_allclose(got, average_views(logits, average), rtol=1e-6)
    single = video_log_probs(ConstantLogits(), paddle.to_tensor(imgs[:, 0]), 'prob')
    np.testing.assert_allclose(np.exp(single), softmax(logits[:, 0]), rtol=1e-6)


# ---- eval.py end to end ----

@pytest.fixture
def tiny_weights(shared_model):
    """The session's seeded tiny weights: eval.py finds their export in the cache."""
    return shared_model['weights']


def test_eval_multi_view_end_to_end(tiny_dataset, tiny_weights, tmp_path):
    over = ['-o', 'TEST.num_clips=2', '-o', 'TEST.num_crops=3', '-o', 'TEST.average=logit',
            '-o', 'TEST.keep_ratio=true']
    out = tmp_path / 'ev'
    res = run_cli('eval.py', '--config', tiny_dataset['config'], '--weights', tiny_weights,
                  '--save_dir', str(out), '--batch_size', '2', *over)
    assert res.returncode == 0, res.stderr[-3000:]
    assert '2 clips x 3 crops (6 views)' in res.stderr + res.stdout
    result = json.loads((out / 'eval_results.json').read_text())
    assert result['num_videos'] == 5 and result['protocol']['num_crops'] == 3

    # the same numbers computed here: every view through the model, logits averaged
    cfg = parse_config(tiny_dataset['config'])
    for o in over[1::2]:
        section, rest = o.split('.', 1)
        key, value = rest.split('=')
        cfg[section][key] = {'true': True}.get(value, int(value) if value.isdigit() else value)
    model = get_model('TSM', cfg, 'test')
    load_weights(model, tiny_weights)
    ds = get_reader('TSM', 'test', cfg)
    items = [ds[i] for i in range(len(ds))]
    imgs = paddle.to_tensor(np.stack([it[0] for it in items]))
    assert imgs.shape == [5, 6, 4, 3, 32, 32]
    labels = np.array([it[1] for it in items])
    with paddle.no_grad():
        flat = model(imgs.reshape([30, 4, 3, 32, 32])).numpy().reshape(5, 6, 3)
    logp = np.log(softmax(flat.mean(axis=1)))
    top1 = float((logp.argmax(1) == labels).mean())
    assert result['top1'] == pytest.approx(top1)
    assert result['loss'] == pytest.approx(nll(logp, labels), abs=1e-4)
    assert float(re.search(r'^TOP1_ACC: ([\d.]+)$', res.stdout, re.M).group(1)) == \
        pytest.approx(top1, abs=1e-5)

    confusion = np.load(out / 'confusion.npy')
    with open(out / 'per_class_accuracy.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['class_name'] for r in rows] == ['red', 'green', 'blue']
    assert [int(r['videos']) for r in rows] == confusion.sum(axis=1).tolist() == [2, 2, 1]
    for i, r in enumerate(rows):
        assert float(r['accuracy']) == pytest.approx(confusion[i, i] / confusion[i].sum(), abs=1e-5)
    assert (out / 'confusion.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
