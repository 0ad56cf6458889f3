"""Paddle 2.6.2 (paddlepaddle-gpu 2.6.2 is the GPU wheel on PyPI): eval.py through every
backend, predict.py and inference_model.py (clip and --online) under a Python with paddlepaddle 2.6.2 and
paddle2onnx 1.3.1 (the paddle2onnx that reads Paddle 2.6's .pdmodel); with paddle2onnx 2.x
there instead (it refuses to import under Paddle 2), the ONNX backends end in one line
naming what to install and `auto` takes Paddle (engines.unusable).

That Python is a venv this file makes on first use, in ~/.cache/tsm_paddle/venv-paddle262,
over this Python's packages (requirements.txt), with the two pins from PyPI (network once,
126 MB; reused afterwards while it still imports both versions).  No other pin is needed:
Paddle 2.6.2 runs here with numpy 2."""
import fcntl
import importlib.metadata
import json
import logging
import os
import shutil
import site
import subprocess
import sys

import paddle
import pytest

import engines
from engines.base import EngineError
from testing.tiny import make_tiny_dataset
from tests.conftest import run_scripts
from tests.test_inference import tiny_tsm

VENV = os.path.join(os.path.expanduser('~'), '.cache', 'tsm_paddle', 'venv-paddle262')
PINS = ('paddlepaddle==2.6.2', 'paddle2onnx==1.3.1')
VERSIONS = '2.6.2 1.3.1'  # paddle, paddle2onnx
BACKENDS = ('paddle', 'onnxruntime', 'openvino', 'auto')
P2O_2 = ("paddle2onnx {} needs paddlepaddle >= 3.0 (found 2.6.2): "
         "pip install 'paddle2onnx<2'")


def works(python):
    res = subprocess.run([python, '-c', 'import paddle, paddle2onnx; '
                          'print(paddle.__version__, paddle2onnx.__version__)'],
                         capture_output=True, text=True, timeout=300)
    return res.stdout.strip().splitlines()[-1:] == [VERSIONS]


@pytest.fixture(scope='session')
def python262():
    """The venv's python: made on first use (12 s on this project's machine, most of it
    the download), reused after (1.6 s: the check that it imports both versions)."""
    python = os.path.join(VENV, 'bin', 'python')
    os.makedirs(os.path.dirname(VENV), exist_ok=True)
    with open(VENV + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one test session builds it, the others wait
        if os.path.exists(python) and works(python):
            return python
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', VENV],
                       check=True, timeout=300)
        purelib = subprocess.run([python, '-c', 'import sysconfig; '
                                  'print(sysconfig.get_path("purelib"))'], check=True,
                                 capture_output=True, text=True).stdout.strip()
        with open(os.path.join(purelib, 'tsm_outer.pth'), 'w', encoding='utf-8') as f:
            f.write('\n'.join(site.getsitepackages()) + '\n')  # also when this is a venv
        pip = subprocess.run([python, '-m', 'pip', 'install', '-q',
                              '--disable-pip-version-check', *PINS],
                             capture_output=True, text=True, timeout=1800)
        assert pip.returncode == 0, pip.stderr[-3000:]
        assert works(python), f"{VENV} does not import paddle and paddle2onnx {VERSIONS}"
    return python


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp('paddle262')
    files = make_tiny_dataset(d)
    paddle.save(tiny_tsm(18, seg=4, size=32, classes=3, seed=1).state_dict(),
                str(d / 'w.pdparams'))  # Paddle 3's file: Paddle 2.6 reads it
    return {**files, 'weights': str(d / 'w.pdparams')}


def run(python, tiny, *runs, env=None):
    """Each (script, *args) of `runs` in turn, with the tiny config and weights on one
    thread, in one interpreter of `python` (what is checked is Paddle 2.6.2, not a fresh
    process); -> a SimpleNamespace(returncode, stdout, stderr) per run."""
    return run_scripts(*[(script, '--config', tiny['config'], '--weights', tiny['weights'],
                          '--cpu_threads', '1', *args) for script, *args in runs],
                       python=python, env=env)


def test_eval_through_every_backend_and_predict_under_paddle_262(python262, tiny, tmp_path):
    """The same figures as the eager model in every engine, each run by Paddle 2.6.2 (its
    .pdmodel for Paddle Inference, paddle2onnx 1.3.1's ONNX for the others)."""
    runs = [('eval.py', *(['--use_inference', 'False'] if backend == 'eager' else
                          ['--backend', backend]),
             '--precision', 'fp32', '--save_dir', str(tmp_path / backend), '-o',
             'TEST.num_clips=2') for backend in ('eager',) + BACKENDS]
    *evals, predicted = run(python262, tiny, *runs,
                            ('predict.py', '--save_dir', str(tmp_path / 'predict')))
    results = {}
    for backend, res in zip(('eager',) + BACKENDS, evals, strict=True):
        assert res.returncode == 0, res.stderr[-3000:]
        log = res.stdout + res.stderr
        assert 'Traceback' not in log and 'WARNING engines' not in log
        if backend != 'eager':
            used = 'openvino' if backend == 'auto' else backend
            assert f'inference engine: engine {used}' in log, log[-3000:]
        if backend == 'paddle':
            assert 'version 2.6.2' in log and 'model.pdmodel' in log
        results[backend] = json.loads((tmp_path / backend / 'eval_results.json').read_text())
    for backend in BACKENDS:
        for k in ('num_videos', 'top1', 'top5', 'mean_class_acc'):
            assert results[backend][k] == results['eager'][k], (backend, k)
        assert abs(results[backend]['loss'] - results['eager']['loss']) < 1e-5, backend
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert 'openvino model from the cache' in predicted.stdout + predicted.stderr  # eval's
    assert len(json.loads((tmp_path / 'predict' / 'predict_results.json').read_text())) == 2


@pytest.mark.parametrize('backend', BACKENDS[:3])
def test_inference_model_py_under_paddle_262(python262, tiny, tmp_path, backend):
    """The clip model and (--online) the per-frame model, each checked against eager."""
    cases = (([], 'TSM', 'checked against the eager model'),
             (['--online'], 'TSM_online', 'checked against the eager online model over 16 frames'))
    done = run(python262, tiny, *[('inference_model.py', '--backend', backend, '--save_dir',
                                   str(tmp_path / name), *flags) for flags, name, _ in cases])
    for (_, name, check), res in zip(cases, done, strict=True):
        assert res.returncode == 0, res.stderr[-3000:]
        assert check in res.stdout + res.stderr
        assert set(os.listdir(tmp_path / name)) == {
            'paddle': {f'{name}.pdmodel', f'{name}.pdiparams', f'{name}.pdiparams.info'},
            'onnxruntime': {f'{name}.onnx'}, 'openvino': {f'{name}.xml', f'{name}.bin'}}[backend]


def test_paddle2onnx_2_under_paddle_262_is_one_line(python262, tiny, tmp_path):
    """paddle2onnx 2.x (this Python's, put before the venv's 1.3.1): --backend onnxruntime
    or openvino is one line naming the pip command; auto runs Paddle, with a warning."""
    dist = importlib.metadata.distribution('paddle2onnx')
    assert dist.version.startswith('2.'), dist.version  # requirements.txt's, under Paddle 3
    metadata = next(f for f in dist.files if f.name == 'METADATA')
    overlay = tmp_path / 'overlay'
    overlay.mkdir()
    for path in (dist.locate_file('paddle2onnx'), dist.locate_file(metadata).parent):
        os.symlink(path, overlay / os.path.basename(path))
    env = {'PYTHONPATH': os.pathsep.join([str(overlay), *filter(None, [
        os.environ.get('PYTHONPATH')])])}
    want = P2O_2.format(dist.version)
    refused = (('eval.py', 'onnxruntime'), ('inference_model.py', 'openvino'))
    *errors, res = run(python262, tiny, *[(script, '--backend', backend, '--save_dir',
                                           str(tmp_path / script)) for script, backend in refused],
                       ('predict.py', '--save_dir', str(tmp_path / 'predict')), env=env)
    for (script, backend), err in zip(refused, errors, strict=True):
        assert err.returncode == 2, err.stderr[-3000:]
        assert err.stderr.strip().splitlines()[-1] == f'error: --backend {backend}: {want}'
        assert 'Traceback' not in err.stderr
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert 'backend auto: paddle' in log and 'inference engine: engine paddle' in log
    assert f'backend auto: not openvino or onnxruntime: {want}' in log


@pytest.mark.parametrize('found,p2o,want', [
    ('2.6.2', '2.1.0', P2O_2.format('2.1.0')),
    ('3.3.1', '1.3.1', "paddle2onnx 1.3.1 reads Paddle 2's programs, not those of paddlepaddle "
                       "3.3.1: pip install 'paddle2onnx>=2'"),
    ('2.6.2', '1.3.1', None), ('3.3.1', '2.1.0', None), ('0.0.0', '2.1.0', None)])
def test_unusable_names_the_paddle2onnx_to_install(monkeypatch, caplog, found, p2o, want):
    monkeypatch.setattr(paddle, '__version__', found)
    monkeypatch.setattr(importlib.metadata, 'version',
                        lambda name: p2o if name == 'paddle2onnx' else '0')
    assert engines.unusable('paddle') is None
    for name in ('onnxruntime', 'openvino'):
        assert engines.unusable(name) == want
    with caplog.at_level(logging.INFO, logger='engines'):
        chosen = engines.choose('auto', 'fp32')
    assert chosen == ('paddle' if want else 'openvino')
    if want:
        assert f'not openvino or onnxruntime: {want}' in caplog.text
        with pytest.raises(EngineError, match=r'^--backend onnxruntime: paddle2onnx'):
            engines.engine('onnxruntime')
