"""`tools/demo.py --quick` end to end: data, train, eval and predict through the real CLIs,
summary.json and the pictures (tiny sizes, so the accuracies mean nothing)."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PICTURES = ('curves.png', 'confusion_tsm.png', 'confusion_tsn.png', 'predict_frames.png')


def _is_png(path):
    with open(path, 'rb') as f:
        head = f.read(24)
    # signature, then the IHDR chunk with a non-zero width and height
    width, height = int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')
    return head[:8] == PNG_SIGNATURE and head[12:16] == b'IHDR' and width > 0 and height > 0


SEG_NUM, FRAMES = 4, 20  # configs/tsm_demo.yaml's seg_num; the quick data's frames per video
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def read_list(path):
    with open(path, encoding='utf-8') as f:
        return [(p, int(label)) for p, label in (ln.rsplit(None, 1) for ln in f if ln.strip())]


def clip_input(path):
    """The test-time input, computed here: the middle frame of each of the 4 segments of
    5 frames (index 5*i + (5-1)//2), decoded by imageio-ffmpeg (not the project's reader),
    at the generated 32 px (no resize, no crop), ImageNet-normalised, [T, 3, H, W]."""
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(path, pix_fmt='rgb24')
    meta = next(gen)
    w, h = meta['size']
    frames = np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen])
    assert len(frames) == FRAMES, path
    picked = frames[[5 * i + 2 for i in range(SEG_NUM)]] / 255.0
    return ((picked - MEAN) / STD).transpose(0, 3, 1, 2).astype('float32')


def eager_log_probs(config, weights, inputs):
    """The saved weights in an eager model (its options from the weights) -> float64
    log-probabilities [N, K] of the clips [N, T, 3, H, W]."""
    import paddle
    from models import get_model, load_weights
    from utils.config_utils import parse_config
    model = get_model('TSM', parse_config(os.path.join(ROOT, config)), 'test')
    load_weights(model, weights)
    with paddle.no_grad():
        logits = model(paddle.to_tensor(np.stack(inputs))).numpy().astype(np.float64)
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True)), model


def test_demo_quick(tmp_path):
    out = tmp_path / 'demo'
    proc = subprocess.run([sys.executable, '-m', 'tools.demo', '--out_dir', str(out), '--quick'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / 'summary.json', encoding='utf-8') as f:
        summary = json.load(f)
    data = out / 'data'
    names = (data / 'label_list.txt').read_text(encoding='utf-8').split()
    held_out = read_list(data / 'val.list')
    # --quick: 2 training and 1 held-out video per class of the 8
    assert len(names) == 8 and len(read_list(data / 'train.list')) == 16
    assert sorted(label for _, label in held_out) == list(range(8))
    labels = np.array([label for _, label in held_out])
    inputs = [clip_input(path) for path, _ in held_out]

    table = {}  # the final table: model, shift, top-1, top-5, train s
    for row in re.findall(r'^(TS[MN])\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\d+$', proc.stdout, re.M):
        table[row[0].lower()] = [float(v) for v in row[1:]]
    assert set(table) == {'tsm', 'tsn'}, proc.stdout
    for key, shift in (('tsm', 0.25), ('tsn', 0.0)):
        s, run = summary[key], out / key
        with open(run / 'eval' / 'eval_results.json', encoding='utf-8') as f:
            written = json.load(f)
        for field in ('top1', 'top5', 'loss', 'num_videos', 'mean_class_acc'):
            assert s[field] == written[field], (key, field)
        # eval.py's confusion matrix: one row per held-out video of each class
        cm = np.load(run / 'eval' / 'confusion.npy')
        assert cm.shape == (8, 8) and (cm.sum(axis=1) == 1).all()
        assert s['num_videos'] == len(held_out) == cm.sum()
        assert s['top1'] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-9)
        # the weights were trained with the model's shift, and give eval.py's figures when
        # recomputed here in an eager model from independently decoded frames
        log_probs, model = eager_log_probs(s['config'], str(run / 'TSM.pdparams'), inputs)
        assert s['shift_ratio'] == shift and model.options()['shift_ratio'] == shift
        ranks = (log_probs > log_probs[np.arange(8), labels][:, None]).sum(axis=1)
        np.testing.assert_array_equal(cm.argmax(axis=1), log_probs.argmax(axis=1))
        assert s['top1'] == pytest.approx((ranks == 0).mean(), abs=1e-9)
        assert s['top5'] == pytest.approx((ranks < 5).mean(), abs=1e-9)
        assert s['loss'] == pytest.approx(-log_probs[np.arange(8), labels].mean(), abs=1e-4)
        assert table[key] == [shift, round(s['top1'], 3), round(s['top5'], 3)]
        history = json.loads((run / 'history.json').read_text())
        assert [h['epoch'] for h in history] == [0] and s['epochs'] == 1

    # the prediction: the first held-out 'moving_down' video, named by its class, with the
    # TSM's three most probable classes and their probabilities
    pred = summary['prediction']
    assert pred['true'] == 'moving_down'
    path, label = next((p, lb) for p, lb in held_out if lb == names.index('moving_down'))
    assert pred['video'] == path
    log_probs, _ = eager_log_probs('configs/tsm_demo.yaml', str(out / 'tsm' / 'TSM.pdparams'),
                                   [clip_input(path)])
    order = np.argsort(-log_probs[0])[:3]
    assert pred['top_names'] == [names[i] for i in order]
    # predict.py runs bf16 by default where the CPU has it (8 bits of mantissa)
    from engines.base import cpu_has_bf16
    np.testing.assert_allclose(pred['top_probs'], np.exp(log_probs[0][order]),
                               atol=1e-2 if cpu_has_bf16() else 1e-4)
    assert (f"prediction: {os.path.basename(path)} -> {pred['top_names'][0]} "
            f"(p={pred['top_probs'][0]:.2f})") in proc.stdout

    assert summary['seconds'] > 0 and summary['quick'] is True
    assert summary['machine']['cpu_count'] >= 1 and summary['machine']['platform']
    assert sorted(summary['pictures'].values()) == sorted(PICTURES)
    for name in PICTURES:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        assert _is_png(path), name
        with Image.open(path) as im:
            im.load()  # decodes every pixel: a truncated or corrupt file raises
            assert im.width > 100 and im.height > 100, name
            assert np.asarray(im.convert('L')).std() > 0, name  # not a blank page


def test_demo_failure_is_one_line(tmp_path):
    """A step that fails ends the demo with one line naming the step."""
    out = tmp_path / 'demo'
    bad = tmp_path / 'missing.list'
    proc = subprocess.run([sys.executable, '-m', 'tools.demo', '--out_dir', str(out), '--quick',
                           '-o', f'TRAIN.filelist={bad}'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith('error:'), proc.stderr
    # both trainings fail; whichever fails first is named
    assert re.search(r"step 'train TS[MN]' failed", lines[0]) and 'missing.list' in lines[0]
    assert not (out / 'summary.json').exists()
