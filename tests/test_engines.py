"""engines/: every engine's export computes what the eager model computes, loads in the
plain engine with no project code, runs bf16 where asked; `auto`, the missing-engine
error, the cache key, and eval.py/predict.py through every backend.

The oracle is the eager model (tested against numpy and the original elsewhere):
exported probabilities within 1e-5 of its softmax and the same top-5 in fp32.
"""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

import engines
from engines.base import EngineError, cpu_has_bf16
from testing.tiny import tiny_sections, write_config
from tests.conftest import ROOT, run_cli, run_main, run_scripts
from tests.test_inference import softmax, tiny_tsm
from inference import artifacts

NAMES = ('paddle', 'onnxruntime', 'openvino')
SHAPE = [4, 3, 32, 32]  # one clip: T, 3L, S, S
PROJECT = ('engines', 'utils', 'models', 'reader', 'metrics', 'tests')


def clips(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


def eager_probs(model, x):
    with paddle.no_grad():
        return softmax(model(paddle.to_tensor(x)).numpy())


def assert_same_as_eager(probs, want):
    assert probs.shape == want.shape
    assert np.abs(probs - want).max() < 1e-5
    np.testing.assert_array_equal(np.argsort(-probs, 1)[:, :5], np.argsort(-want, 1)[:, :5])


@pytest.fixture(scope='module')
def models():
    tsm = tiny_tsm(18, seg=4, size=32, classes=7, seed=3)
    tsn = tiny_tsm(18, seg=4, size=32, classes=7, seed=3)
    tsn.backbone.set_shift(0, 'paddle', 'blockres')  # the same weights with no shift
    return {'tsm': tsm, 'tsn': tsn}


@pytest.fixture(scope='module')
def exported(models, tmp_path_factory):
    """(engine, kind, batch) -> artifact: TSM and TSN in the engine's table batch, as the
    cache exports them (logits out).  Any batch: ONNX Runtime's table batch here; on every
    engine, test_inference_model_py_writes_what_the_plain_engine_loads (its export check
    runs our runner on 2 clips, the plain engine runs 3)."""
    d = tmp_path_factory.mktemp('engines')
    out = {}
    for name in NAMES:
        eng = engines.engine(name)
        batch = engines.BATCH[name]
        for kind in ('tsm', 'tsn'):
            prefix = str(d / f'{name}_{kind}_{batch}' / 'model')
            os.makedirs(os.path.dirname(prefix))
            out[name, kind, batch] = eng.export(models[kind], prefix, SHAPE,
                                                engines.FORMULATION[name], batch)
    return out


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('kind', ['tsm', 'tsn'])
def test_export_equals_eager_for_batch_1_and_3(exported, models, name, kind):
    eng = engines.engine(name)
    batch = engines.BATCH[name]
    runner = eng.load(exported[name, kind, batch], threads=1, precision='fp32', batch=batch)
    for n in (1, 3):
        x = clips(n, seed=n)
        assert_same_as_eager(softmax(runner.run(x)), eager_probs(models[kind], x))
    info = runner.describe()
    assert info['engine'] == name and info['precision'] == 'fp32'
    assert info['threads'] == 1 and os.path.exists(info['artifact'])
    assert info['version'] == eng.versions()[name if name != 'paddle' else 'paddle']
    got = runner(paddle.to_tensor(clips(2)))
    assert isinstance(got, paddle.Tensor) and got.shape == [2, 7]  # the eager call signature


@pytest.mark.parametrize('name', NAMES)
def test_the_shift_is_exported(exported, models, name):
    """Each engine's TSM export answers as the eager TSM and not as the same weights with
    no shift (TSN), which differ here by more than the tolerance: a lost shift shows."""
    x = clips(2)
    batch = engines.BATCH[name]
    tsm = softmax(engines.engine(name).load(exported[name, 'tsm', batch], threads=1,
                                            precision='fp32', batch=batch).run(x))
    assert np.abs(tsm - eager_probs(models['tsm'], x)).max() < 1e-5
    assert np.abs(tsm - eager_probs(models['tsn'], x)).max() > 1e-3


def test_openvino_precision_hint_and_threads_are_set(exported):
    """OpenVINO defaults to bf16 on AMX CPUs: fp32 must be asked for."""
    import openvino as ov
    eng = engines.engine('openvino')
    artifact = exported['openvino', 'tsm', engines.BATCH['openvino']]
    fp32 = eng.load(artifact, threads=1, precision='fp32').compiled
    assert fp32.get_property('INFERENCE_PRECISION_HINT') == ov.Type.f32
    assert fp32.get_property('INFERENCE_NUM_THREADS') == 1
    bf16 = eng.load(artifact, threads=2, precision='bf16')
    assert bf16.compiled.get_property('INFERENCE_NUM_THREADS') == 2
    if cpu_has_bf16():
        assert bf16.compiled.get_property('INFERENCE_PRECISION_HINT') == ov.Type.bf16
    # the kernels that run: bf16 ones only when bf16 is asked for and the CPU has it
    kernels = {'fp32': eng.load(artifact, threads=1, precision='fp32').describe()['kernels'],
               'bf16': bf16.describe()['kernels']}
    assert kernels['fp32'] and 'bf16' not in kernels['fp32']
    assert ('bf16' in kernels['bf16']) == cpu_has_bf16(), kernels


def test_onnxruntime_threads_are_set(exported):
    artifact = exported['onnxruntime', 'tsm', engines.BATCH['onnxruntime']]
    runner = engines.engine('onnxruntime').load(artifact, threads=2)
    opts = runner.session.get_session_options()
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1


SIGNAL_AFTER_RUNNERS = r"""
import os, signal, sys, numpy as np, openvino as ov
from engines import openvino_engine
x = ov.opset8.parameter([1, 3, 8, 8], np.float32)
w = ov.opset8.constant(np.ones((4, 3, 3, 3), np.float32))
xml = os.path.join(sys.argv[1], 'conv.xml')
ov.save_model(ov.Model([ov.opset8.convolution(x, w, [1, 1], [0, 0], [0, 0], [1, 1])], [x]), xml)
first = openvino_engine.load(xml)
second = openvino_engine.load(xml)
del first, second  # released in the order they were made, as a test or a reload does
got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append(1))  # Python's handlers: SA_ONSTACK
for _ in range(3):
    os.kill(os.getpid(), signal.SIGUSR1)
print('handled', len(got))
"""


def test_signals_are_handled_after_runners_are_released(tmp_path):
    """OpenVINO's CPU plugin gives the thread that compiles a model an alternate signal
    stack of its own, and when it is destroyed it restores the stack it found, which an
    earlier plugin may have unmapped meanwhile: the next signal with a handler then
    segfaulted (docs/single_process_crash.md).  The runners share one plugin."""
    res = subprocess.run([sys.executable, '-c', SIGNAL_AFTER_RUNNERS, str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.split() == ['handled', '3']


@pytest.mark.skipif(not cpu_has_bf16(), reason='this CPU has no bf16 kernels (AVX512-BF16 or AMX)')
@pytest.mark.parametrize('name', NAMES)
def test_bf16_keeps_the_top1_of_fp32(exported, models, name, caplog):
    """bf16 keeps 8 bits of mantissa: probabilities within 0.02 of fp32's, and the same
    top-1 wherever fp32's top-2 margin exceeds 0.04 (on more than half the clips here, so
    the check is not empty).  ONNX Runtime runs fp32 instead, with a warning.  A CPU
    without bf16: test_bf16_falls_back_to_fp32_on_every_engine."""
    eng = engines.engine(name)
    artifact = exported[name, 'tsm', engines.BATCH[name]]
    x = clips(6, seed=7)
    fp32 = softmax(eng.load(artifact, 1, 'fp32', engines.BATCH[name]).run(x))
    with caplog.at_level(logging.WARNING):
        runner = eng.load(artifact, 1, artifacts.effective_precision('bf16'),
                          engines.BATCH[name])
    bf16 = softmax(runner.run(x))
    if name == 'onnxruntime':
        assert runner.describe()['precision'] == 'fp32' and 'no bfloat16' in caplog.text
        np.testing.assert_array_equal(bf16, fp32)
    else:
        assert runner.describe()['precision'] == 'bf16'
        assert 0 < np.abs(bf16 - fp32).max() < 0.02  # bf16 kernels ran: not fp32's answer
        if name == 'openvino':
            assert 'bf16' in runner.describe()['kernels']
    top2 = -np.sort(-fp32, 1)[:, :2]
    clear = top2[:, 0] - top2[:, 1] > 0.04
    assert clear.sum() > len(x) / 2
    np.testing.assert_array_equal(bf16.argmax(1)[clear], fp32.argmax(1)[clear])


@pytest.mark.parametrize('name', NAMES)
def test_bf16_falls_back_to_fp32_on_every_engine(exported, name, monkeypatch):
    """Where the CPU lacks bf16, asking for it runs fp32: the same answer as fp32."""
    import engines.base as base
    monkeypatch.setattr(base, 'cpu_has_bf16', lambda: False)
    eng = engines.engine(name)
    artifact = exported[name, 'tsm', engines.BATCH[name]]
    x = clips(2, seed=5)
    runner = eng.load(artifact, 1, base.effective_precision('bf16'), engines.BATCH[name])
    assert runner.describe()['precision'] == 'fp32'
    np.testing.assert_array_equal(runner.run(x),
                                  eng.load(artifact, 1, 'fp32', engines.BATCH[name]).run(x))


def measured_order(precision):
    """docs/engines.md's measured s/clip -> per host, the engines fastest first."""
    with open(os.path.join(os.path.dirname(engines.__file__), '..', 'docs', 'engines.md'),
              encoding='utf-8') as f:
        row = next(line for line in f if line.startswith(f'| {precision} |'))
    orders = []
    for cell in row.strip().strip('|').split('|')[1:]:
        timed = [(float(t), name) for name, t in (e.split() for e in cell.split(','))]
        orders.append([name for _, name in sorted(timed)])
    return orders


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_the_auto_order_is_the_measured_one(precision):
    """FASTEST_FIRST is ranked by the figures in docs/engines.md, on every host there."""
    orders = measured_order(precision)
    assert len(orders) >= 2
    for order in orders:
        assert [n for n in engines.FASTEST_FIRST[precision] if n in order] == order


def test_auto_takes_the_fastest_installed_engine(monkeypatch, caplog):
    # OpenVINO first in both; then ONNX Runtime (fp32) or Paddle (bf16, where ONNX Runtime
    # has no bf16 convolutions)
    with caplog.at_level(logging.INFO, logger='engines'):
        assert engines.choose('auto', 'fp32') == 'openvino'
        assert engines.choose('auto', 'bf16') == 'openvino'
    assert 'backend auto: openvino, the fastest installed engine for bf16' in caplog.text
    assert 'not installed' not in caplog.text  # every engine is in requirements.txt
    real = engines.missing
    monkeypatch.setattr(engines, 'missing',
                        lambda name: ['openvino'] if name == 'openvino' else real(name))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='engines'):
        assert engines.choose('auto', 'fp32') == 'onnxruntime'
        assert engines.choose('auto', 'bf16') == 'paddle'
    assert 'backend auto: paddle' in caplog.text and 'not installed: openvino' in caplog.text
    monkeypatch.setattr(engines, 'missing', lambda name: [] if name == 'paddle' else [name])
    assert engines.choose('auto', 'fp32') == 'paddle'
    assert engines.choose('onnxruntime', 'bf16') == 'onnxruntime'  # asked for: as given


def test_precision_defaults(monkeypatch):
    """predict.py and the server: bf16 where the CPU has it; eval.py fp32 (it reproduces
    published accuracy); inference_model.py fp32 on Paddle."""
    import engines.base as base
    import eval as eval_script
    import inference_model
    import predict
    assert predict.parse_args([]).precision is None  # resolved by default_precision()
    assert predict.parse_args([]).backend == eval_script.parse_args([]).backend == 'auto'
    assert eval_script.parse_args([]).precision == 'fp32'
    args = inference_model.parse_args([])
    assert (args.backend, args.precision, args.formulation) == ('paddle', 'fp32', None)
    for has, want in ((True, 'bf16'), (False, 'fp32')):
        monkeypatch.setattr(base, 'cpu_has_bf16', lambda has=has: has)
        assert base.default_precision() == want


def test_a_missing_engine_names_its_pip_package(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'paddle2onnx' else real(name, *a))
    with pytest.raises(EngineError, match=r'^--backend onnxruntime needs paddle2onnx, not '
                                          r'installed: pip install paddle2onnx$'):
        engines.engine('onnxruntime')
    assert engines.engine('paddle').NAME == 'paddle'


BLOCKED = r'''
import runpy, sys
sys.modules['openvino'] = None  # as if not installed
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.fixture(scope='module')
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp('engine_cli')
    model = tiny_tsm(18, seg=4, size=32, classes=3, seed=1)
    paddle.save(model.state_dict(), str(d / 'w.pdparams'))
    return {'dir': d, 'model': model, 'weights': str(d / 'w.pdparams'),
            'config': write_config(d / 'tiny.yaml', tiny_sections())}


def test_missing_engine_is_a_one_line_error_on_the_command_line(tiny_files, tmp_path):
    for script in ('inference_model.py', 'eval.py'):
        res = run_cli('-c', BLOCKED, script, '--config', tiny_files['config'], '--weights',
                      tiny_files['weights'], '--backend', 'openvino', '--save_dir',
                      str(tmp_path / script))
        assert res.returncode == 2, res.stderr[-2000:]
        last = res.stderr.strip().splitlines()[-1]
        assert last == ('error: --backend openvino needs openvino, not installed: '
                        'pip install openvino'), res.stderr[-2000:]
        assert 'Traceback' not in res.stderr


def test_int8_asks_for_a_quantized_model(tiny_files, tmp_path, monkeypatch):
    from utils.config_utils import parse_config
    monkeypatch.setenv('TSM_PADDLE_CACHE', str(tmp_path))
    cfg = parse_config(tiny_files['config'])
    with pytest.raises(EngineError, match='tools/quantize.py --config C --weights W '
                                          '--filelist L'):
        artifacts.cached_runner(tiny_files['model'], tiny_files['weights'], cfg, 'INFER',
                                precision='int8', backend='paddle')
    assert os.listdir(tmp_path) == []  # nothing exported for it
    import inference_model  # the command line's one line, in this process (no work done)
    code, _, err = run_main(inference_model.main, '--config', tiny_files['config'],
                            '--weights', tiny_files['weights'], '--precision', 'int8',
                            '--save_dir', str(tmp_path), '--cpu_threads', '1')
    assert code == 2 and 'tools/quantize.py' in err.strip().splitlines()[-1]


PLAIN = {  # each engine as its own documentation shows it: no project code
    'paddle': r'''
import sys, numpy as np, paddle.inference as pi
config = pi.Config(sys.argv[1] + '.json', sys.argv[1] + '.pdiparams')
config.enable_mkldnn()
predictor = pi.create_predictor(config)
assert predictor.get_input_names() == ['image']
x = np.load(sys.argv[2])
inp = predictor.get_input_handle('image')
inp.reshape(list(x.shape))
inp.copy_from_cpu(x)
predictor.run()
probs = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
''',
    'onnxruntime': r'''
import sys, numpy as np, onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1] + '.onnx', providers=['CPUExecutionProvider'])
assert [i.name for i in sess.get_inputs()] == ['image']
probs = sess.run(None, {'image': np.load(sys.argv[2])})[0]
''',
    'openvino': r'''
import sys, numpy as np, openvino as ov
core = ov.Core()
compiled = core.compile_model(core.read_model(sys.argv[1] + '.xml'), 'CPU',
                              {'INFERENCE_PRECISION_HINT': 'f32'})
assert compiled.input(0).get_any_name() == 'image'
probs = compiled({'image': np.load(sys.argv[2])})[0]
''',
}
PLAIN_END = r'''
np.save(sys.argv[3], probs)
ours = sorted(m for m in sys.modules if m.split('.')[0] in %r)
assert not ours, ours
''' % (PROJECT,)


@pytest.mark.parametrize('name', NAMES)
def test_inference_model_py_writes_what_the_plain_engine_loads(tiny_files, tmp_path, name):
    """--batch -1 (any batch; the default, engines.BATCH, is test_online_export.py's): the
    plain engine runs 3 clips at once."""
    out = tmp_path / 'out'
    res = run_cli('inference_model.py', '--config', tiny_files['config'], '--weights',
                  tiny_files['weights'], '--save_dir', str(out), '--backend', name,
                  '--batch', '-1')
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'checked against the eager model' in res.stdout + res.stderr
    files = {'paddle': {'TSM.json', 'TSM.pdiparams'}, 'onnxruntime': {'TSM.onnx'},
             'openvino': {'TSM.xml', 'TSM.bin'}}[name]
    assert set(os.listdir(out)) == files  # no temporary left
    x = np.random.default_rng(4).standard_normal((3, *SHAPE)).astype(np.float32)
    np.save(tmp_path / 'x.npy', x)
    plain = subprocess.run(
        [sys.executable, '-I', '-c', PLAIN[name] + PLAIN_END, str(out / 'TSM'),
         str(tmp_path / 'x.npy'), str(tmp_path / 'probs.npy')],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert_same_as_eager(np.load(tmp_path / 'probs.npy'), eager_probs(tiny_files['model'], x))


def test_export_check_refuses_a_wrong_export(tiny_files, monkeypatch):
    """inference_model.py's check: an export that moves no frames (a TSN program for TSM
    weights) is a one-line error, and nothing is written."""
    import models.shift_conv as shift_conv
    monkeypatch.setattr(shift_conv, 'moved_folds', lambda x, folds, seg_num, batch: x)
    out = tiny_files['dir'] / 'wrong'
    with pytest.raises(EngineError, match='does not compute what the eager model computes'):
        artifacts.export_artifact(tiny_files['model'], 'paddle', str(out / 'TSM'), SHAPE,
                                  formulation='split')  # the one moved_folds leaves intact
    assert os.listdir(out) == []


def test_cache_key_follows_engine_stored_precision_and_versions(tiny_files):
    model, w = tiny_files['model'], tiny_files['weights']
    cfg = {'seg_num': 4, 'num_layers': 18}

    def key(backend='paddle', precision='fp32', versions=None):
        return artifacts.cache_key(w, model, cfg, SHAPE, backend, 'split', 1, precision,
                                   versions or {'paddle': '3.3.1'})[0]

    base = key()
    assert key() == base
    assert len({base, key('onnxruntime'), key('openvino')}) == 3
    assert key(precision='bf16') == base  # bf16 is a load-time setting: one float32 artifact
    assert key(precision='int8') != base  # a quantized model is another artifact
    assert key(versions={'paddle': '3.3.2'}) != base  # stale after an upgrade


def test_publish_keeps_the_entry_of_the_first_exporter(tmp_path):
    final, late = tmp_path / 'key', tmp_path / '.export-late'
    final.mkdir()
    (final / 'model.onnx').write_text('first')
    late.mkdir()
    (late / 'model.onnx').write_text('second')
    artifacts.publish(str(late), str(final))  # a concurrent export of the same key
    assert (final / 'model.onnx').read_text() == 'first'


def test_eval_through_every_backend_and_predict_match_eager(tiny_dataset, tmp_path):
    """Same figures and predictions as --use_inference False (eval with two views per
    video: 6-D batches); one cache entry per engine, which predict reuses.  predict.py
    through one engine: it gets its engine as eval.py does (inference.loading.for_inference), and
    every engine's runner answers as eager (test_export_equals_eager_for_batch_1_and_3)."""
    weights = tmp_path / 'w.pdparams'
    paddle.save(tiny_tsm(18, seg=4, size=32, classes=3, seed=1).state_dict(), str(weights))
    common = ['--config', tiny_dataset['config'], '--weights', str(weights), '--cpu_threads',
              '1', '--precision', 'fp32']
    env = {'TSM_PADDLE_CACHE': str(tmp_path / 'cache')}
    flags = {'eager': ['--use_inference', 'False'],
             **{name: ['--backend', name] for name in NAMES}}
    backends = ('eager',) + NAMES
    runs = [('eval.py', *common, *flags[b], '--save_dir', str(tmp_path / f'ev_{b}'), '-o',
             'TEST.num_clips=2') for b in backends]
    runs += [('predict.py', *common, *flags[b], '--infer_topk', '3', '--save_dir',
              str(tmp_path / f'pr_{b}')) for b in ('eager', 'openvino')]
    done = run_scripts(*runs, env=env)  # one interpreter: what they share is on disk
    evals, preds = {}, {}
    for backend, ev in zip(backends, done):
        assert ev.returncode == 0, ev.stderr[-3000:]
        evals[backend] = json.loads((tmp_path / f'ev_{backend}' / 'eval_results.json')
                                    .read_text())
        if backend != 'eager':
            assert f'inference engine: engine {backend}' in ev.stdout + ev.stderr
    for backend in NAMES:
        for k in ('num_videos', 'top1', 'top5', 'mean_class_acc'):
            assert evals[backend][k] == evals['eager'][k], (backend, k)
        assert abs(evals[backend]['loss'] - evals['eager']['loss']) < 1e-5
    for backend, pr in zip(('eager', 'openvino'), done[len(backends):], strict=True):
        assert pr.returncode == 0, pr.stderr[-3000:]
        preds[backend] = json.loads((tmp_path / f'pr_{backend}' / 'predict_results.json')
                                    .read_text())
    assert 'from the cache' in pr.stdout + pr.stderr  # predict reuses eval's export
    assert len(os.listdir(tmp_path / 'cache')) == 3
    for got, want in zip(preds['openvino'], preds['eager'], strict=True):
        assert got['top_names'] == want['top_names']
        np.testing.assert_allclose(got['top_probs'], want['top_probs'], atol=1e-5)
