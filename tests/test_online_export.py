"""The online model exported (inference_model.py --online, the cache of predict.py --online
and the server's camera mode): every engine's per-frame model computes what the eager
online model computes, and what the offline backward-shift model computes causally.

Oracles: the eager online model (models/online.py, itself checked against the offline
model in test_predict_modes.py), and independently the offline TSM with
shift_direction backward run on frames 0..t for each t, its per-frame logits averaged
over the window with numpy.  Plain engines load the files with no project code.
"""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

import engines
from engines.base import cpu_has_bf16
from models.online import OnlineTSM
from testing.media import write_video
from testing.tiny import tiny_sections, write_config
from tests.conftest import run_cli, run_main, run_scripts
from tests.test_inference import tiny_tsm

NAMES = ('paddle', 'onnxruntime', 'openvino')
SIZE, CLASSES, FRAMES = 32, 7, 16
FRAME = [3, SIZE, SIZE]
PROJECT = ('engines', 'utils', 'models', 'reader', 'metrics', 'tests', 'server')


def stream(frames=FRAMES, streams=1, seed=0):
    """A random stream of normalised frames: [T, B, 3, S, S]."""
    return np.random.default_rng(seed).standard_normal(
        (frames, streams, *FRAME)).astype(np.float32)


def run_states(runner, frames, shapes):
    """The exported model stepped by hand over frames [T, B, 3, S, S] from zero states:
    -> per-frame logits [T, B, K]."""
    states = [np.zeros((frames.shape[1], *s), np.float32) for s in shapes]
    out = []
    for frame in frames:
        logits, *states = runner.run_many([frame, *states])
        out.append(logits)
    return np.stack(out)


def eager_logits(model, frames):
    online = OnlineTSM(copy.deepcopy(model), window=1)
    return np.stack([online.step(f) for f in frames])


@pytest.fixture(scope='module')
def model():
    return tiny_tsm(18, seg=4, size=SIZE, classes=CLASSES, seed=3, shift_direction='backward')


@pytest.fixture(scope='module')
def shapes(model):
    """The state shapes, read off the eager model's shift layers' inputs."""
    from models.online import OnlineStep
    return OnlineStep(copy.deepcopy(model)).state_shapes(SIZE)


@pytest.fixture(scope='module')
def exported(model, tiny_files):
    """engine -> its online artifact, exported by the cache (batch 1) for tiny_files'
    weights and config: predict.py --online below finds it there instead of exporting
    the same model again."""
    from inference import artifacts
    from utils.config_utils import parse_config
    cfg = parse_config(tiny_files['config'])
    return {name: artifacts.cached_artifact(engines.engine(name), model, tiny_files['weights'],
                                            cfg, 'INFER', 'fp32', online=True)[0]
            for name in NAMES}


def test_one_state_per_shifted_layer(model, shapes):
    # ResNet-18: 8 blocks, each shifted; the state is the first 1/8 of the block input
    assert len(shapes) == 8
    assert shapes[0] == [64 // 8, SIZE // 4, SIZE // 4] and shapes[-1] == [512 // 8, 1, 1]


@pytest.mark.parametrize('name', NAMES)
def test_online_export_equals_the_eager_online_model(exported, model, shapes, name):
    eng = engines.engine(name)
    x = stream()
    want = eager_logits(model, x)
    got = run_states(eng.load(exported[name], 1, 'fp32', 1), x, shapes)
    assert got.shape == want.shape == (FRAMES, 1, CLASSES)
    assert np.abs(got - want).max() < 1e-4
    bf16 = eng.load(exported[name], 1, 'bf16', 1)
    top = run_states(bf16, x, shapes).argmax(-1)
    # bf16 keeps 8 bits of mantissa: the same top-1 wherever fp32's is clear
    ranked = -np.sort(-want, -1)
    clear = ranked[..., 0] - ranked[..., 1] > 0.05 * np.abs(want).max()
    assert clear.sum() > clear.size / 2
    np.testing.assert_array_equal(top[clear], want.argmax(-1)[clear])
    if cpu_has_bf16() and name != 'onnxruntime':  # ONNX Runtime runs fp32 for bf16
        assert bf16.describe()['precision'] == 'bf16'


def test_the_state_carries_the_past(exported, model, shapes):
    """Frame 1's logits depend on frame 0 (through the states): the test above would see
    a lost state."""
    runner = engines.engine('openvino').load(exported['openvino'], 1, 'fp32', 1)
    a, b = stream(2, seed=1), stream(2, seed=2)
    b[1] = a[1]
    assert np.abs(run_states(runner, a, shapes)[1] - run_states(runner, b, shapes)[1]).max() > 1e-3


def offline_per_frame(model, frames):
    """The offline backward-shift TSM (seg_num = len(frames)) on one clip: the logits of
    each of its frames, [T, K] (feature_mean head: dropout, then the FC per frame)."""
    offline = copy.deepcopy(model)
    offline.backbone.seg_num = len(frames)
    for block in offline.backbone.blocks:
        if block.shift is not None:
            block.shift.seg_num = len(frames)
    with paddle.no_grad():
        feats = offline.backbone(paddle.to_tensor(frames))  # [T, 3, S, S] -> [T, F, h, w]
        feats = offline.avgpool(feats).flatten(1)  # [T, F, 1, 1] -> [T, F]
        return offline.fc(offline.dropout(feats)).numpy()


@pytest.mark.parametrize('name', NAMES)
def test_online_export_is_the_causal_offline_model(exported, model, shapes, name):
    """At every t, the exported model's answer equals the offline backward-shift model run
    on frames 0..t only: its frame t (window 1), and the numpy mean of its last 3 frames
    (window 3, what OnlineStream averages)."""
    from models.online import OnlineStream
    from inference.artifacts import runner_step
    runner = engines.engine(name).load(exported[name], 1, 'fp32', 1)
    x = stream(8, seed=5)[:, 0]
    got = run_states(runner, x[:, None], shapes)[:, 0]
    windowed = OnlineStream(runner_step(runner), shapes, window=3)
    for t in range(len(x)):
        past = offline_per_frame(model, x[:t + 1])  # sees frames 0..t only
        scale = max(1.0, np.abs(past).max())
        assert np.abs(got[t] - past[t]).max() < 1e-4 * scale, t
        mean = past[max(0, t - 2):t + 1].mean(axis=0)
        assert np.abs(windowed.step(x[t:t + 1])[0] - mean).max() < 1e-4 * scale, t
    bidirectional = copy.deepcopy(model)
    bidirectional.set_options(shift_direction='paddle')
    with paddle.no_grad():  # the shift direction matters here: the check is not empty
        both = bidirectional(paddle.to_tensor(x[None])).numpy()[0]
    assert np.abs(both - offline_per_frame(model, x).mean(0)).max() > 1e-3


PLAIN_OPENVINO = r'''
import sys, numpy as np, openvino as ov
core = ov.Core()
model = core.read_model(sys.argv[1])
compiled = core.compile_model(model, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
inputs = [i.get_any_name() for i in compiled.inputs]
outputs = [o.get_any_name() for o in compiled.outputs]
shapes = [list(i.get_shape()) for i in compiled.inputs]
x = np.load(sys.argv[2])
states = [np.zeros(s, np.float32) for s in shapes[1:]]
logits = []
for frame in x:
    out = compiled([frame, *states])
    logits.append(out[0])
    states = [out[i] for i in range(1, len(outputs))]
np.save(sys.argv[3], np.stack(logits))
ours = sorted(m for m in sys.modules if m.split('.')[0] in %r)
assert not ours, ours
print(repr((inputs, outputs, shapes)))
''' % (PROJECT,)


@pytest.fixture(scope='module')
def tiny_files(tmp_path_factory, model):
    d = tmp_path_factory.mktemp('online_cli')
    paddle.save(model.state_dict(), str(d / 'w.pdparams'))
    sections = tiny_sections()
    sections['MODEL'] = dict(sections['MODEL'], num_classes=CLASSES,
                             shift_direction='backward')
    (d / 'labels.txt').write_text(''.join(f'{i} class{i}\n' for i in range(CLASSES)))
    sections['INFER']['kinetics_labels'] = str(d / 'labels.txt')
    rng = np.random.default_rng(2)
    return {'dir': d, 'weights': str(d / 'w.pdparams'),
            'config': write_config(d / 'tiny.yaml', sections),
            'video': write_video(d / 's.avi', rng.integers(0, 256, (10, 48, 64, 3), np.uint8),
                                 fps=10)}


def test_inference_model_py_online_for_a_plain_openvino(tiny_files, model, tmp_path):
    """inference_model.py --online --backend openvino: TSM_online.xml, inputs frame and
    state_i with batch 1, outputs logits and new_state_i; plain OpenVINO steps it."""
    out = tmp_path / 'out'
    res = run_cli('inference_model.py', '--config', tiny_files['config'], '--weights',
                  tiny_files['weights'], '--save_dir', str(out), '--backend', 'openvino',
                  '--online')
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'online openvino export checked against the eager online model over 16 frames' \
        in res.stdout + res.stderr
    assert set(os.listdir(out)) == {'TSM_online.xml', 'TSM_online.bin'}
    x = stream(6, seed=7)
    np.save(tmp_path / 'x.npy', x)
    plain = subprocess.run(
        [sys.executable, '-I', '-c', PLAIN_OPENVINO, str(out / 'TSM_online.xml'),
         str(tmp_path / 'x.npy'), str(tmp_path / 'logits.npy')],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    inputs, outputs, shapes = eval(plain.stdout.strip().splitlines()[-1])  # noqa: S307 (ours)
    n = len(inputs) - 1
    assert n == 8 and inputs == ['frame'] + [f'state_{i}' for i in range(n)]
    assert outputs == ['logits'] + [f'new_state_{i}' for i in range(n)]
    assert shapes[0] == [1, *FRAME] and all(s[0] == 1 for s in shapes)
    want = eager_logits(model, x)
    assert np.abs(np.load(tmp_path / 'logits.npy') - want).max() < 1e-4


def test_inference_model_py_batch_is_static_by_default(tiny_files, model, tmp_path):
    """The IR as inference_model.py writes it has batch 1 (engines.BATCH: what the runner
    compiles, no dynamic shapes for a plain user to pay for); --batch -1 keeps it
    dynamic."""
    import inference_model
    from engines.openvino_engine import CORE  # one Core per process
    from inference.artifacts import export_artifact
    assert inference_model.parse_args([]).batch is None and engines.BATCH['openvino'] == 1
    got = {}
    for batch in (1, None):
        path, _ = export_artifact(model, 'openvino', str(tmp_path / str(batch) / 'TSM'),
                                  [4, *FRAME], batch=batch)
        got[batch] = str(CORE.read_model(path).inputs[0].get_partial_shape())
    assert got == {1: '[1,4,3,32,32]', None: '[?,4,3,32,32]'}
    code, _, err = run_main(inference_model.main, '--config', tiny_files['config'],
                            '--batch', '0')
    assert code == 2 and '--batch must be positive' in err


def predict_online(files, runs):
    """predict.py --online over files' video, once per (save_dir, *flags) of `runs`, in one
    interpreter -> per run (its frame records, its log)."""
    done = run_scripts(*[('predict.py', '--config', files['config'], '--weights',
                          files['weights'], '--online', '--video_path', files['video'],
                          '--online_window', '3', '--cpu_threads', '1', '--save_dir',
                          str(save_dir), *flags) for save_dir, *flags in runs])
    out = []
    for (save_dir, *_), res in zip(runs, done, strict=True):
        assert res.returncode == 0, res.stderr[-3000:]
        frames = json.loads((save_dir / 'online_results.json').read_text())['frames']
        out.append((frames, res.stdout + res.stderr))
    return out


def eager_records(files):
    """predict.py --online's loop on the eager online model, in this process."""
    import cv2
    from models import get_model, load_weights
    from utils.config_utils import parse_config
    from jobs.online_job import run_online, stream_frames
    cfg = parse_config(files['config'])
    model = get_model('TSM', cfg, 'infer')
    load_weights(model, files['weights'])
    cap = cv2.VideoCapture(files['video'])
    try:
        return run_online(OnlineTSM(model, 3), stream_frames(cap), cfg,
                          [str(i) for i in range(CLASSES)])
    finally:
        cap.release()


def test_predict_online_through_every_engine(tiny_files, tmp_path):
    """predict.py --online --backend X answers every frame as the eager online model does
    (fp32); the default (auto, bf16 where the CPU has it) runs OpenVINO."""
    eager = eager_records(tiny_files)
    assert len(eager) == 10
    engines_flags = (('paddle', ['--backend', 'paddle', '--precision', 'fp32']),
                     ('onnxruntime', ['--backend', 'onnxruntime', '--precision', 'fp32']),
                     ('openvino', []))
    done = predict_online(tiny_files, [(tmp_path / name, *flags)
                                       for name, flags in engines_flags])
    for (name, flags), (got, log) in zip(engines_flags, done, strict=True):
        assert f'online inference engine: engine {name}' in log
        assert [f['class_index'] for f in got] == [f['class_index'] for f in eager], name
        if flags:
            np.testing.assert_allclose([f['probability'] for f in got],
                                       [f['probability'] for f in eager], atol=1e-5)
    want = 'bf16' if cpu_has_bf16() else 'fp32'
    assert f'precision {want}' in log  # the default's


def test_the_cache_keeps_online_and_clip_models_apart(tiny_files):
    from inference import artifacts
    from utils.config_utils import parse_config
    cfg = parse_config(tiny_files['config'])
    eng = engines.engine('openvino')
    m = tiny_tsm(18, seg=4, size=SIZE, classes=CLASSES, seed=3, shift_direction='backward')
    clip = artifacts.cache_entry(eng, m, tiny_files['weights'], cfg, 'INFER', 'fp32')
    online = artifacts.cache_entry(eng, m, tiny_files['weights'], cfg, 'INFER', 'fp32', True)
    assert clip[0] != online[0]
    assert online[2]['formulation'] == 'online' and online[2]['input'] == FRAME
    assert online[2]['batch'] == 1


def test_mit_direction_cannot_export_online(tiny_files, tmp_path):
    """A one-line error before any work: checked in this process."""
    import inference_model
    code, _, err = run_main(inference_model.main, '--config', tiny_files['config'],
                            '--weights', tiny_files['weights'], '--online', '-o',
                            'MODEL.shift_direction=mit', '--save_dir', str(tmp_path),
                            '--cpu_threads', '1')
    assert code == 2
    assert "MIT's direction" in err.strip().splitlines()[-1]
