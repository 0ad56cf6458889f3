"""Long runs lose nothing: signals save a resumable checkpoint, SIGKILL at any moment
leaves the last checkpoint usable and `--resume latest` reaches the same final weights,
a non-finite loss stops with the iteration named, hung or crashing decoders are skipped,
(a dead rank: tests/test_distributed.py)."""
import glob
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from reader import get_reader
from reader import kinetics_reader
from testing.media import make_clip, write_video
from testing.tiny import tiny_sections, write_config
from tests.conftest import ROOT, alive, gone_within, run_cli, tagged
from utils.config_utils import parse_config
from training.loader import build_loader, resilient_batches
from utils.safe_pickle import safe_load

TRAIN = ['train.py', '--pretrain', 'none', '--fix_random_seed', 'True', '--log_interval', '1',
         '--valid_interval', '0', '--save_interval_iters', '1']


def weights(path):
    return {k: v for k, v in safe_load(str(path)).items() if isinstance(v, np.ndarray)}


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6, err_msg=k)


def start(args, tag='', **faults):
    env = dict(os.environ, PYTHONWARNINGS='ignore', PYTHONUNBUFFERED='1', TSM_TEST_TAG=tag,
               **faults)
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(proc, marker, timeout=120):
    """Read stdout until a line contains marker; -> the output so far."""
    seen, t0 = [], time.time()
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return ''.join(seen)
        assert time.time() - t0 < timeout, ''.join(seen)
    raise AssertionError(f"process ended before '{marker}':\n{''.join(seen)}\n{proc.stderr.read()}")


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run (2 iterations per epoch) on the tiny dataset."""
    from testing.tiny import make_tiny_dataset
    tmp = tmp_path_factory.mktemp('ref')
    data = make_tiny_dataset(tmp)
    res = run_cli(*TRAIN, '--config', data['config'], '--save_dir', str(tmp / 'ref'))
    assert res.returncode == 0, res.stderr[-2000:]
    return data, tmp / 'ref' / 'TSM.pdparams'


def test_sigkill_at_several_moments_then_resume_latest(reference, tmp_path):
    data, final = reference
    out = tmp_path / 'killed'
    args = [*TRAIN, '--config', data['config'], '--save_dir', str(out), '--resume', 'latest']
    for marker in ('Epoch 0, iter 0/2', 'Epoch 0 done', 'Epoch 1, iter 0/2'):
        tag = f'sigkill-{os.getpid()}-{time.time()}'
        proc = start(args + ['-o', 'TRAIN.num_reader_threads=2'], tag)  # with workers
        wait_for(proc, marker)
        workers = [p for p in tagged(tag) if p != proc.pid]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert len(workers) == (2 if 'iter' in marker else 0)  # none between epochs
        assert gone_within(tag, 10) == []  # its loader workers died with it
        # and unlinked their shared memory (batches read ahead, never read)
        assert [f for p in workers for f in glob.glob(f'/dev/shm/paddle_{p}_*')] == []
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'resumed from' in res.stdout
    assert_same_weights(out / 'TSM.pdparams', final)


def test_sigterm_and_sigint_save_then_resume(reference, tmp_path):
    """Each signal lands in a chosen step (tests/faulty_train.py pauses it until the signal
    is in): mid-epoch, the last step of an epoch, the last step of the run."""
    data, final = reference
    out = tmp_path / 'term'
    base = ['tests/faulty_train.py', *TRAIN[1:], '--config', data['config'], '--save_dir',
            str(out), '--resume', 'latest']
    # (signal, pause at epoch:step of this process, the line it ends with)
    for sig, pause, said in ((signal.SIGTERM, '0:0', 'interrupted at epoch 0, iteration 1'),
                             (signal.SIGINT, '0:0', 'interrupted after epoch 0')):
        proc = start(base, TSM_FAULT_PAUSE=pause)
        wait_for(proc, 'PAUSED')
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-2000:]
        assert err.startswith(f'error: {said}') and 'Traceback' not in err, err[-2000:]
        prefix = err.split('continue with --resume ')[1].strip()
        assert os.path.isfile(prefix + '.pdparams') and os.path.isfile(prefix + '.pdopt')
    # in the run's last step there is nothing left to stop: it ends as planned
    proc = start(base, TSM_FAULT_PAUSE='1:1')
    before = wait_for(proc, 'PAUSED')
    proc.send_signal(signal.SIGTERM)
    after, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert 'resumed from' in before and 'got SIGTERM' in after + err
    assert_same_weights(out / 'TSM.pdparams', final)


def test_a_second_signal_stops_at_once_without_a_checkpoint(reference, tmp_path):
    data, _ = reference
    out = tmp_path / 'twice'
    proc = start(['tests/faulty_train.py', *TRAIN[1:], '--config', data['config'],
                  '--save_dir', str(out)], TSM_FAULT_PAUSE='0:0:2')
    wait_for(proc, 'PAUSED')
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the first is handled (either order ends the same way)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.startswith('error: interrupted before a checkpoint could be saved')
    assert 'Traceback' not in err and err.count('\n') == 1, err[-2000:]
    assert glob.glob(str(out / '*.pdparams')) == []


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path):
    res = run_cli(*TRAIN, '--config', tiny_dataset['config'], '--save_dir', str(tmp_path),
                  '--learning_rate', '1e12', '--epoch', '5')
    assert res.returncode == 2, res.stdout[-2000:]
    assert re.match(r'error: (loss is (nan|inf)|weights became non-finite) at epoch \d+ '
                    r'iteration \d+', res.stderr), res.stderr
    assert 'Traceback' not in res.stderr
    from training.checkpoint import find_latest
    latest = find_latest(str(tmp_path), 'TSM')
    assert latest is not None
    assert all(np.isfinite(v).all() for v in weights(latest + '.pdparams').values())


# ---- decoders that hang or crash ----

def children():
    """This process's child processes, zombies (ended, not reaped) included."""
    pids = set()
    for task in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{task}/children', encoding='ascii') as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:  # the thread ended meanwhile
            pass
    return pids


@pytest.fixture
def generations(monkeypatch):
    """Watches the iterators a test's loaders start: the worker pids of each, and which
    workers of the earlier ones were still alive at each start (none may be: an old
    worker writing the culprit slots would have a new death blamed on its video)."""
    import paddle
    record = {'workers': [], 'alive_at_start': []}
    real = paddle.io.DataLoader.__iter__

    def spy(self):
        record['alive_at_start'].append([p for g in record['workers'] for p in g if alive(p)])
        it = real(self)
        record['workers'].append([w.pid for w in getattr(it, '_workers', [])])
        return it
    monkeypatch.setattr(paddle.io.DataLoader, '__iter__', spy)
    return record


@pytest.fixture
def leaves_nothing(generations):
    """The loader scenario ends with nothing of its loaders left, at once: no worker
    process (running or unreaped), no reader thread, no /dev/shm/paddle_<worker pid>_*
    segment, no pid in Paddle's SIGCHLD check that would raise for an old death."""
    from paddle.base import core
    kids = children()
    yield
    assert children() - kids == set()
    assert [t.name for t in threading.enumerate() if '_thread_loop' in t.name] == []
    pids = [p for g in generations['workers'] for p in g]
    assert pids and [f for p in pids for f in glob.glob(f'/dev/shm/paddle_{p}_*')] == []
    core._throw_error_if_process_failed()  # raises for a registered worker that died

def _dataset(tmp_path, n, timeout):
    good = write_video(tmp_path / 'good.avi', make_clip(8))
    lines = [f"{tmp_path / f'bad{i}.avi' if i == 1 else good} 0" for i in range(n)]
    (tmp_path / 'v.list').write_text('\n'.join(lines) + '\n')
    sections = tiny_sections()
    sections['VALID']['video_timeout'] = timeout
    return get_reader('TSM', 'valid', parse_config(write_config(tmp_path / 'c.yaml', sections)),
                      filelist=str(tmp_path / 'v.list'))


def _patch_decoder(monkeypatch, behaviour, bad='bad'):
    """open_video misbehaves on paths containing `bad` (runs in the forked workers)."""
    real_open = kinetics_reader.open_video

    def patched(path, *a, **k):
        if bad in os.path.basename(path):
            if behaviour == 'sleeps':
                time.sleep(60)
            elif behaviour == 'stuck_in_c':  # Python's signal handler cannot run
                signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
                time.sleep(60)
            else:
                os.kill(os.getpid(), signal.SIGSEGV)
        return real_open(path, *a, **k)

    monkeypatch.setattr(kinetics_reader, 'open_video', patched)


@pytest.mark.parametrize('behaviour', ['sleeps', 'stuck_in_c', 'segfaults'])
def test_bad_decoder_is_skipped_and_the_epoch_goes_on(tmp_path, monkeypatch, behaviour,
                                                      leaves_nothing):
    _patch_decoder(monkeypatch, behaviour, bad='bad1')
    ds = _dataset(tmp_path, 6, timeout=1.0)
    loader = build_loader(ds, batch_size=2, num_workers=1)
    t0 = time.time()
    batches = list(resilient_batches(loader))
    assert time.time() - t0 < 40
    assert [i for i, _ in batches] == [0, 1, 2]
    # only the bad video is lost: the one its worker was reading when it died
    assert [len(b['paths']) for _, b in batches] == [1, 2, 2]
    assert [int(b['failed']) for _, b in batches] == [1, 0, 0]


@pytest.fixture(scope='module')
def twelve_clips(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('twelve')
    good = write_video(tmp / 'good.avi', make_clip(8))
    return tmp, good


@pytest.mark.parametrize('workers, bad', [(2, i) for i in range(12)] +
                         [(w, i) for w in (1, 3) for i in (0, 5, 11)])
def test_a_segfaulting_clip_anywhere_costs_only_itself(twelve_clips, monkeypatch, workers, bad,
                                                      generations, leaves_nothing):
    """12 clips, batches of 2, one decoder segfault at item `bad`, while the consumer is
    busy between batches (as a training step is): Paddle then reports the death from a
    SIGCHLD handler wherever the main thread is.  Every batch comes, in order, with
    every video but the bad one."""
    tmp, good = twelve_clips
    _patch_decoder(monkeypatch, 'segfaults')
    lines = [f"{tmp / f'bad{i}.avi' if i == bad else good} 0" for i in range(12)]
    (tmp / f'l{bad}.list').write_text('\n'.join(lines) + '\n')
    sections = tiny_sections()
    cfg = parse_config(write_config(tmp / 'c.yaml', sections))
    loader = build_loader(get_reader('TSM', 'valid', cfg, filelist=str(tmp / f'l{bad}.list')),
                          batch_size=2, num_workers=workers)
    seen = []
    for i, batch in resilient_batches(loader):
        time.sleep(0.05)  # a training step
        seen.append((i, len(batch['paths']), int(batch['failed'])))
    expected = [(i, 2 - (i == bad // 2), int(i == bad // 2)) for i in range(6)]
    assert seen == expected
    assert len(generations['workers']) == 2  # the workers restarted once
    assert generations['alive_at_start'] == [[], []]  # with every old worker gone


def _good_loader(tmp, n=6, workers=2):
    good = write_video(tmp / 'good.avi', make_clip(8))
    (tmp / 'g.list').write_text(f"{good} 0\n" * n)
    cfg = parse_config(write_config(tmp / 'c.yaml', tiny_sections()))
    return build_loader(get_reader('TSM', 'valid', cfg, filelist=str(tmp / 'g.list')),
                        batch_size=2, num_workers=workers)


def test_an_epoch_that_ends_normally_leaves_nothing(tmp_path, leaves_nothing):
    assert [len(b['paths']) for _, b in resilient_batches(_good_loader(tmp_path))] == [2, 2, 2]


def test_a_consumer_that_stops_early_leaves_nothing(tmp_path, leaves_nothing):
    batches = resilient_batches(_good_loader(tmp_path))
    assert next(batches)[0] == 0
    batches.close()  # as a `break` or an exception in the training step does
