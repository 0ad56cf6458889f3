"""The tests' fixtures and process helpers; the media and config helpers they share with
bench/ live in testing/ (no network, no ../shared)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from testing.tiny import make_tiny_dataset  # noqa: E402


@pytest.fixture
def tiny_dataset(tmp_path):
    """7 small videos over 3 classes, list files and a tiny config; -> dict of paths."""
    return make_tiny_dataset(tmp_path)


@pytest.fixture(autouse=True, scope='session')
def _inference_cache(tmp_path_factory):
    """eval.py / predict.py export to a cache of this test session, not ~/.cache."""
    old = os.environ.get('TSM_PADDLE_CACHE')
    os.environ['TSM_PADDLE_CACHE'] = str(tmp_path_factory.mktemp('inference_cache'))
    yield
    if old is None:
        os.environ.pop('TSM_PADDLE_CACHE', None)
    else:
        os.environ['TSM_PADDLE_CACHE'] = old


def run_cli(*args, env=None, timeout=300):
    """Run `python <script> args...` from the repo root; -> CompletedProcess (text)."""
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def environ_of(pid):
    """Process `pid`'s environment entries (bytes); [] once it is gone."""
    try:
        with open(f'/proc/{pid}/environ', 'rb') as f:
            return f.read().split(b'\0')
    except OSError:
        return []


def alive(pid):
    """True while `pid` runs (a zombie has ended)."""
    from utils.parent_watch import ended
    return not ended(pid)


def tagged(tag):
    """Live processes whose environment holds TSM_TEST_TAG=tag: a run started with that
    tag and every process it started (they inherit it)."""
    entry = f'TSM_TEST_TAG={tag}'.encode()
    return [int(p) for p in os.listdir('/proc')
            if p.isdigit() and entry in environ_of(p) and alive(p)]


def gone_within(tag, seconds):
    """Waits until no process of run `tag` is left; -> those still there after `seconds`
    (killed then, so that no test leaves them behind)."""
    import signal
    import time
    deadline = time.monotonic() + seconds
    while (left := tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


# ---- shared by several files: in-process entry scripts, one served model per session ----

def run_main(main, *argv):
    """`main(argv)` of an entry script in this process, for a check of how bad input ends
    (it ends before any work, so it needs no interpreter of its own): -> (exit code,
    stdout, stderr).  An exception that is not SystemExit fails the test, as a traceback
    on stderr would.  The logging setup and os.environ (OMP_NUM_THREADS) the script
    changes are restored; pass --cpu_threads 1 to a script that sets Paddle's threads, so
    that this process keeps Paddle's default of one.  Output goes through files, not
    StringIO: worker processes forked meanwhile need a stderr with a file descriptor."""
    import contextlib
    import logging
    import tempfile
    root = logging.getLogger()
    handlers, level, environ = root.handlers[:], root.level, dict(os.environ)
    code = 0
    with tempfile.TemporaryFile('w+', buffering=1) as out, \
            tempfile.TemporaryFile('w+', buffering=1) as err:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
            os.environ.clear()
            os.environ.update(environ)
        out.seek(0)
        err.seek(0)
        return code, out.read(), err.read()


SCRIPTS_IN_ONE = r'''
import importlib, json, sys
from tests.conftest import run_main
done = []
for script, argv in json.loads(sys.argv[1]):
    code, out, err = run_main(importlib.import_module(script[:-3]).main, *argv)
    done.append({'returncode': code, 'stdout': out, 'stderr': err})
print(json.dumps(done))
'''


def run_scripts(*runs, python=sys.executable, env=None, timeout=300):
    """Entry scripts of the repo root, each (script, *args) of `runs` in turn, in one new
    interpreter of `python`: one start-up for several runs where what is checked is not
    a fresh process (a run after another reads what that one left on disk, not in
    memory: each run's state goes with its main()).  -> a SimpleNamespace(returncode,
    stdout, stderr) per run."""
    from types import SimpleNamespace
    argvs = json.dumps([(script, list(args)) for script, *args in runs])
    res = subprocess.run([python, '-c', SCRIPTS_IN_ONE, argvs], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout * len(runs),
                         env=dict(os.environ, PYTHONWARNINGS='ignore', **(env or {})))
    assert res.returncode == 0, res.stderr[-3000:]
    return [SimpleNamespace(**r) for r in json.loads(res.stdout.strip().splitlines()[-1])]


@pytest.fixture(scope='session')
def shared_model(tmp_path_factory, _inference_cache):
    """One tiny model per session: a config (tiny.yaml, labels red, green, blue), seeded
    weights (w.pdparams), and their OpenVINO exports (clip and online: what serve.py and
    predict.py load by default, the stored artifact being float32 for fp32 and bf16 alike)
    in the session's inference cache.  Every server of the session (test_server*.py,
    test_browser.py) and predict.py in test_predict_modes.py find them there instead of
    exporting the same model again."""
    import argparse
    import paddle
    from models import get_model, load_weights
    from training import checkpoint
    from utils.config_utils import parse_config
    from inference.loading import for_inference, online_for_inference
    from testing.tiny import tiny_sections, write_config
    d = tmp_path_factory.mktemp('shared_model')
    (d / 'labels.txt').write_text('0 red\n1 green\n2 blue\n')
    sections = tiny_sections(kinetics_labels=str(d / 'labels.txt'))
    config = write_config(d / 'tiny.yaml', sections)
    cfg = parse_config(config)
    paddle.seed(1)
    checkpoint.save_weights(get_model('TSM', cfg, 'infer'), str(d / 'w.pdparams'))
    model = get_model('TSM', cfg, 'infer')
    load_weights(model, str(d / 'w.pdparams'))
    args = argparse.Namespace(use_inference=None, backend='auto', precision='fp32')
    for export in (for_inference, online_for_inference):
        export(model, args, cfg, 'INFER', str(d / 'w.pdparams'), threads=1)
    return {'dir': d, 'config': config, 'weights': str(d / 'w.pdparams'),
            'labels': str(d / 'labels.txt'), 'sections': sections}
