"""tools/quantize.py: int8 by post-training quantization (NNCF on OpenVINO), the IR it
writes, `--precision int8` running it, and its one-line errors.

The oracle is the eager model (float32, paddle), on the clips the project's reader makes
of tiny generated videos.  Its head is set to a nearest-centroid classifier of its own
features (centroid_head), so that every clip has a clear top-1 (fp32's top-2 probability
gap > 0.3): int8's rounding must keep that top-1, while on a random head with
near-uniform probabilities it could flip by chance.
"""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from engines.int8 import compare
from testing.media import write_video
from testing.tiny import tiny_sections, write_config
from tests.conftest import run_cli, run_main, run_scripts
from tests.test_inference import softmax, tiny_tsm

CLASSES = 3
CLEAR = 0.3  # fp32's top-2 probability gap on every clip, by construction
# int8 against the eager float32 model: an 8-bit grid over each tensor's calibrated range
# moves a probability by a few hundredths here (measured: mean 0.003-0.01, largest
# 0.02-0.05 over the runs while writing this); these bounds leave room for NNCF's choices
MEAN_TOL, MAX_TOL = 0.03, 0.12


def clips_of(cfg, listfile):
    """The list's clips as predict.py feeds them: [N, T, 3L, S, S]."""
    from reader import get_reader, parse_list
    items = parse_list(listfile, 'mp4', need_label=False)
    dataset = get_reader('TSM', 'infer', cfg, items=items)
    return np.stack([dataset[i][0] for i in range(len(dataset))])


def centroid_head(model, x, labels, scale=40.0):
    """Set model.fc to a nearest-centroid classifier of the features it receives on x
    (argmax_k f.(m_k - m) - |m_k - m|^2/2 - (m_k - m).m = argmin_k |f - m_k|, scaled)."""
    feats = []
    hook = model.fc.register_forward_pre_hook(lambda layer, inp: feats.append(inp[0].numpy()))
    with paddle.no_grad():
        model(paddle.to_tensor(x))
    hook.remove()
    f = feats[0].astype(np.float64)
    mean = f.mean(0)
    cent = np.stack([f[labels == k].mean(0) for k in range(CLASSES)]) - mean  # [K, F]
    unit = scale / np.abs(f - mean).max()
    weight = cent.T * unit  # [F, K], paddle's Linear: x @ W
    bias = -(0.5 * (cent ** 2).sum(1) + cent @ mean) * unit
    model.fc.weight.set_value(weight.astype(np.float32))
    model.fc.bias.set_value(bias.astype(np.float32))
    return model


def eager_probs(model, x):
    with paddle.no_grad():
        return softmax(model(paddle.to_tensor(x)).numpy().astype(np.float64))


@pytest.fixture(scope='module')
def quantized(tmp_path_factory):
    """9 videos (3 classes, a colour cast each), the centroid-headed tiny TSM, and
    tools/quantize.py run on them (the test session's cache)."""
    from utils.config_utils import parse_config
    d = tmp_path_factory.mktemp('quantize')
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3 * CLASSES):
        clip = rng.integers(0, 256, (12, 40, 48, 3), dtype=np.uint8)
        clip[:, :, :, i % CLASSES] //= 4
        lines.append(f"{write_video(d / f'v{i}.avi', clip)} {i % CLASSES}")
    (d / 'calib.list').write_text('\n'.join(lines) + '\n')
    (d / 'labels.txt').write_text('0 red\n1 green\n2 blue\n')
    sections = tiny_sections()
    sections['INFER']['kinetics_labels'] = str(d / 'labels.txt')
    sections['TEST']['filelist'] = str(d / 'calib.list')
    sections['INFER']['num_reader_threads'] = 2  # decoded in worker processes
    config = write_config(d / 'tiny.yaml', sections)
    cfg = parse_config(config)
    x = clips_of(cfg, str(d / 'calib.list'))
    labels = np.arange(len(x)) % CLASSES
    model = centroid_head(tiny_tsm(18, seg=4, size=32, classes=CLASSES, seed=1), x, labels)
    paddle.save(model.state_dict(), str(d / 'w.pdparams'))
    want = eager_probs(model, x)
    top2 = -np.sort(-want, 1)[:, :2]
    assert (want.argmax(1) == labels).all() and (top2[:, 0] - top2[:, 1] > CLEAR).all()
    res = run_cli('-m', 'tools.quantize', '--config', config, '--weights', str(d / 'w.pdparams'),
                  '--filelist', str(d / 'calib.list'), '--save_dir', str(d / 'out'),
                  '--cpu_threads', '1')
    assert res.returncode == 0, res.stderr[-3000:]
    cache = res.stdout.strip().splitlines()[-1].split(': ', 1)[1]
    return {'dir': d, 'config': config, 'weights': str(d / 'w.pdparams'), 'x': x,
            'want': want, 'labels': labels, 'cache': cache, 'log': res.stdout + res.stderr}


PLAIN = r'''
import sys, numpy as np, openvino as ov
core = ov.Core()
compiled = core.compile_model(core.read_model(sys.argv[1]), 'CPU',
                              {'INFERENCE_PRECISION_HINT': 'f32'})
assert compiled.input(0).get_any_name() == 'image'
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.concatenate([compiled({'image': clip[None]})[0] for clip in x]))
ours = sorted(m for m in sys.modules if m.split('.')[0] in
              ('engines', 'utils', 'models', 'reader', 'metrics', 'tests', 'tools'))
assert not ours, ours
'''


def runtime_precisions(xml, layer_type='Convolution'):
    """How OpenVINO's CPU plugin runs each `layer_type` layer of the compiled IR (the
    engine's Core: a Core of its own could leave an unmapped signal stack behind,
    docs/single_process_crash.md)."""
    from engines.openvino_engine import CORE
    compiled = CORE.compile_model(CORE.read_model(xml), 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    return [op.get_rt_info()['runtimePrecision'].astype(str)
            for op in compiled.get_runtime_model().get_ops()
            if op.get_rt_info()['layerType'].astype(str) == layer_type]


def test_quantize_writes_an_int8_ir_that_plain_openvino_runs(quantized, tmp_path):
    from engines.openvino_engine import CORE
    out = quantized['dir'] / 'out'
    assert sorted(os.listdir(out)) == ['TSM.bin', 'TSM.xml']  # no temporary left
    ops = [op.get_type_name() for op in CORE.read_model(str(out / 'TSM.xml')).get_ops()]
    assert ops.count('FakeQuantize') >= 20  # R18's 20 convolutions and the classifier
    # the plugin runs every convolution in int8 (those reading moved folds too, by
    # quantize_moved_folds: 8 of the split export's 45 here), the float32 export's in f32
    int8 = runtime_precisions(str(out / 'TSM.xml'))
    meta = json.loads(open(os.path.join(quantized['cache'], 'meta.json')).read())
    fp32 = runtime_precisions(meta['calibration']['quantized_from'])
    assert set(fp32) == {'f32'} and len(int8) == len(fp32) == 45
    assert set(int8) <= {'u8', 'i8'}, int8
    np.save(tmp_path / 'x.npy', quantized['x'])
    plain = subprocess.run([sys.executable, '-I', '-c', PLAIN, str(out / 'TSM.xml'),
                            str(tmp_path / 'x.npy'), str(tmp_path / 'p.npy')],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    probs = np.load(tmp_path / 'p.npy').astype(np.float64)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)  # probabilities out
    got = compare(quantized['want'], probs)
    assert got['top1_agreement'] == 1.0, got
    assert got['mean_abs_prob_diff'] < MEAN_TOL and got['max_abs_prob_diff'] < MAX_TOL, got
    assert 0 < got['max_abs_prob_diff']  # int8 did run: not float32's numbers


def test_the_cache_entry_says_how_it_was_made(quantized):
    meta = json.loads(open(os.path.join(quantized['cache'], 'meta.json')).read())
    assert meta['stored'] == 'int8' and meta['engine'] == 'openvino' and meta['batch'] == 1
    assert meta['calibration']['clips'] == 3 * CLASSES
    assert meta['calibration']['failed_videos'] == 0
    assert meta['check']['top1_agreement'] == 1.0


def test_predict_and_eval_precision_int8_run_the_quantized_model(quantized, tmp_path):
    flags = ['--config', quantized['config'], '--weights', quantized['weights'],
             '--precision', 'int8', '--cpu_threads', '1']
    pr, ev = run_scripts(  # one interpreter: what they share is on disk
        ('predict.py', *flags, '--filelist', str(quantized['dir'] / 'calib.list'),
         '--infer_topk', '3', '--save_dir', str(tmp_path / 'pr')),
        ('eval.py', *flags, '--backend', 'openvino', '--save_dir', str(tmp_path / 'ev')))
    assert pr.returncode == 0, pr.stderr[-3000:]
    log = pr.stdout + pr.stderr
    assert 'precision int8' in log and f"artifact {quantized['cache']}/model.xml" in log
    records = json.loads((tmp_path / 'pr' / 'predict_results.json').read_text())
    assert len(records) == len(quantized['x'])
    names = ['red', 'green', 'blue']
    assert [r['top_names'][0] for r in records] == \
        [names[k] for k in quantized['want'].argmax(1)]
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert f"artifact {quantized['cache']}/model.xml" in ev.stdout + ev.stderr
    assert json.loads((tmp_path / 'ev' / 'eval_results.json').read_text())['top1'] == 1.0


def test_int8_without_a_quantized_model_is_a_one_line_error(quantized, tmp_path, monkeypatch):
    """The lookup is the same for every engine (inference.artifacts.cached_artifact; Paddle's
    in tests/test_engines.py::test_int8_asks_for_a_quantized_model).  It ends before any
    work: checked in this process."""
    import predict
    monkeypatch.setenv('TSM_PADDLE_CACHE', str(tmp_path / 'empty'))
    code, _, err = run_main(predict.main, '--config', quantized['config'], '--weights',
                            quantized['weights'], '--precision', 'int8', '--backend',
                            'openvino', '--filelist', str(quantized['dir'] / 'calib.list'),
                            '--cpu_threads', '1')
    assert code == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith('error: --precision int8: no quantized openvino model'), last
    assert 'tools/quantize.py --config C --weights W --filelist L' in last


def test_bad_calibration_inputs_are_one_line_errors(quantized, tmp_path):
    """A list that names no video, and --backend paddle, end before any work: checked in
    this process; videos that do not decode are found by the worker processes: checked
    through the command line."""
    from tools.quantize import main as quantize_main
    (tmp_path / 'empty.list').write_text('# nothing\n')
    (tmp_path / 'broken.avi').write_text('not a video')
    (tmp_path / 'broken.list').write_text(f"{tmp_path / 'broken.avi'}\n"
                                          f"{tmp_path / 'absent.mp4'} 1\n")
    common = ['--config', quantized['config'], '--weights', quantized['weights'],
              '--save_dir', str(tmp_path / 'out'), '--cpu_threads', '1']
    cases = {
        str(tmp_path / 'absent.list'): f"error: list file not found: {tmp_path / 'absent.list'}",
        str(tmp_path / 'empty.list'): f"error: {tmp_path / 'empty.list'}: no videos listed",
    }
    for listfile, want in cases.items():
        code, _, err = run_main(quantize_main, *common, '--filelist', listfile)
        assert code == 2, err[-3000:]
        assert err.strip().splitlines()[-1].startswith(want), err[-3000:]
    broken = str(tmp_path / 'broken.list')
    res = run_cli('-m', 'tools.quantize', *common, '--filelist', broken)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1].startswith(
        f"error: {broken}: none of its 2 videos could be decoded"), res.stderr[-3000:]
    assert 'Traceback' not in res.stderr
    code, _, err = run_main(quantize_main, '--config', quantized['config'], '--weights',
                            quantized['weights'], '--filelist',
                            str(quantized['dir'] / 'calib.list'), '--backend', 'paddle',
                            '--cpu_threads', '1')
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith('error: --backend paddle: no int8 quantization') and \
        last.endswith('use --backend openvino'), last
    assert not (tmp_path / 'out').exists()  # nothing written by a failed run


def test_compare_by_hand():
    fp32 = np.array([[0.7, 0.2, 0.1], [0.40, 0.35, 0.25], [0.1, 0.1, 0.8]])
    int8 = np.array([[0.6, 0.3, 0.1], [0.30, 0.45, 0.25], [0.1, 0.1, 0.8]])
    got = compare(fp32, int8, margin=0.1)
    assert got['clips'] == 3 and got['top1_agreement'] == pytest.approx(2 / 3)
    # |diff|: rows (0.1, 0.1, 0), (0.1, 0.1, 0), 0 -> mean 0.4/9, per-row max 0.1, 0.1, 0
    assert got['mean_abs_prob_diff'] == pytest.approx(0.4 / 9)
    assert got['mean_max_abs_prob_diff'] == pytest.approx(0.2 / 3)
    assert got['max_abs_prob_diff'] == pytest.approx(0.1)
    # clear: gaps 0.5, 0.05, 0.7 -> clips 0 and 2, both kept
    assert got['clear_clips'] == 2 and got['clear_top1_agreement'] == 1.0
    assert compare(fp32[1:2], int8[1:2])['clear_top1_agreement'] is None


def test_calibration_clips_are_every_view_up_to_the_limit(tmp_path):
    """Two clips per video (-o INFER.num_clips=2): each view is a calibration input, in
    list order, as the reader makes it; a video that does not decode is counted."""
    from reader import get_reader, parse_list
    from utils.config_utils import apply_overrides, parse_config
    from jobs.quantize_job import CalibrationClips
    rng = np.random.default_rng(1)
    lines = [write_video(tmp_path / f'v{i}.avi', rng.integers(0, 256, (16, 40, 48, 3),
                                                             dtype=np.uint8))
             for i in range(3)]
    (tmp_path / 'bad.avi').write_text('not a video')
    (tmp_path / 'c.list').write_text('\n'.join([lines[0], str(tmp_path / 'bad.avi'),
                                                *lines[1:]]) + '\n')
    cfg = parse_config(write_config(tmp_path / 'c.yaml', tiny_sections()))
    apply_overrides(cfg, ['INFER.num_clips=2'])
    dataset = get_reader('TSM', 'infer', cfg,
                         items=parse_list(str(tmp_path / 'c.list'), 'mp4', need_label=False))
    want = np.concatenate([dataset[i][0] for i in (0, 2, 3)])  # [3*2, T, 3L, S, S]
    clips = CalibrationClips(dataset, 0, 100, 'c.list', keep=3)
    assert len(clips) == 8  # 4 videos x 2 views: the most there can be
    got = list(clips)
    assert [c.shape for c in got] == [(1, 4, 3, 32, 32)] * 6
    np.testing.assert_array_equal(np.concatenate(got), want)
    assert clips.decoded == 6 and clips.failed == 1 and len(clips.kept) == 3
    limited = CalibrationClips(dataset, 0, 3, 'c.list')
    assert len(limited) == 3 and len(list(limited)) == 3  # stops at the limit
