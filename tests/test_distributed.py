"""Two CPU processes under paddle.distributed.launch stay in step whatever fails: whole
batches that fail on one rank, a decoder that segfaults on one rank, a signal, a nan or a
checkpoint that cannot be written on one rank.  Every case ends with every rank finished
or stopped with the same one-line error, within a timeout (a rank out of step would hang
or die in gloo), and a run interrupted and resumed, on a rank that does not share rank 0's
disk, ends with the weights of the uninterrupted run that met the same failures.
Faults are injected by tests/faulty_train.py."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from testing.media import write_video
from testing.tiny import tiny_sections, write_config
from tests.conftest import ROOT, environ_of, gone_within
from utils.safe_pickle import safe_load

GOOD, EMPTY, CRASH = 6, 3, 1  # videos of the list: decodable, empty files, segfaulting
TRAIN = ['tests/faulty_train.py', '--pretrain', 'none', '--use_gpu', 'False',
         '--fix_random_seed', 'True', '--log_interval', '1', '--valid_interval', '1']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """10 videos: 6 good, 3 empty files, 1 whose decoder segfaults (TSM_FAULT_SEGV=crash);
    global batch 2 (1 video per rank per step), so a failed video fails its rank's whole
    batch; one reader worker per rank (a segfault kills a worker, not the rank)."""
    tmp = tmp_path_factory.mktemp('dist')
    rng = np.random.default_rng(0)
    lines = []
    for i in range(GOOD + EMPTY + CRASH):
        label = i % 3
        if i in (1, 4, 8):
            path = tmp / f'empty{i}.avi'
            path.write_bytes(b'')
        else:
            clip = rng.integers(0, 256, (12, 40, 48, 3), dtype=np.uint8)
            clip[:, :, :, label] //= 4
            path = write_video(tmp / (f'crash{i}.avi' if i == 6 else f'v{i}.avi'), clip)
        lines.append(f"{path} {label}")
    (tmp / 'train.list').write_text('\n'.join(lines) + '\n')
    (tmp / 'val.list').write_text('\n'.join(lines[:4]) + '\n')
    (tmp / 'all_empty.list').write_text(''.join(f"{tmp / f'empty{i}.avi'} 0\n" for i in (1, 4, 8)))
    sections = tiny_sections()
    sections['TRAIN'].update(filelist=str(tmp / 'train.list'), batch_size=2,
                             num_reader_threads=1)
    sections['VALID'].update(filelist=str(tmp / 'val.list'), batch_size=2)
    return {'dir': tmp, 'config': write_config(tmp / 'c.yaml', sections)}


def launch(data, name, *extra, env=None, timeout=300):
    """Start the 2-process run `name` -> (Popen, log dir, save dir)."""
    logs, out = data['dir'] / name / 'log', data['dir'] / name / 'out'
    cmd = [sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', '2',
           '--log_dir', str(logs), *TRAIN, '--config', data['config'], '--save_dir',
           str(out), *extra]
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', TSM_FAULT_SEGV='crash',
                    TSM_TEST_TAG=f'{name}-{os.getpid()}-{time.time()}', **(env or {}))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    proc.tag = full_env['TSM_TEST_TAG']
    return proc, logs, out


def finish(proc, logs, timeout=300):
    """Wait for the launcher (a hang fails the test) -> (exit code, [log of rank 0, 1])."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the run hung:\n{read_logs(logs)[0][-3000:]}")
    return rc, read_logs(logs)


def read_logs(logs):
    # without NUL bytes: Paddle's C handler writes a worker's segfault message with its
    # string's terminating NUL, so the rank's next line starts with one ('\0error: ...')
    return [(logs / f'workerlog.{r}').read_text(errors='replace').replace('\0', '')
            if (logs / f'workerlog.{r}').exists() else '' for r in (0, 1)]


def error_lines(log):
    return [ln for ln in log.splitlines() if ln.startswith('error: ')]


def weights(path):
    return {k: v for k, v in safe_load(str(path)).items() if isinstance(v, np.ndarray)}


def expected_failures():
    """Failed videos per epoch, as Paddle's own DistributedBatchSampler deals the list
    out: every bad video is read by exactly one rank, and none is padded in (10 videos)."""
    ds = list(range(GOOD + EMPTY + CRASH))
    got = []
    for rank in (0, 1):
        s = paddle.io.DistributedBatchSampler(ds, batch_size=1, num_replicas=2, rank=rank,
                                              shuffle=True)
        s.set_epoch(0)
        got += [i for b in s for i in b]
    assert sorted(got) == ds
    return EMPTY + CRASH


@pytest.fixture(scope='module')
def uninterrupted(data):
    proc, logs, out = launch(data, 'reference', '--epoch', '2')
    rc, (log0, log1) = finish(proc, logs)
    assert rc == 0, log0[-3000:] + log1[-3000:]
    return out, log0, log1


def test_failures_on_one_rank_keep_the_ranks_in_step(uninterrupted):
    out, log0, log1 = uninterrupted
    history = json.loads((out / 'history.json').read_text())
    assert [h['epoch'] for h in history] == [0, 1]
    for h in history:  # the loss and accuracy count only the real videos
        assert h['train']['num_failed'] == expected_failures()
        assert h['train']['num_videos'] == GOOD
        assert h['valid']['num_videos'] == 3 and h['valid']['num_failed'] == 1
    both = log0 + log1
    assert 'its decoder killed the reader process' in both  # the segfault, on one rank
    assert 'Traceback' not in both and 'gloo' not in both.lower()
    assert all(np.isfinite(v).all() for v in weights(out / 'TSM.pdparams').values())


def rank_pid(tag, rank, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        for pid in os.listdir('/proc'):
            if pid.isdigit() and _env_has(pid, tag, rank):
                return int(pid)
        time.sleep(0.2)
    raise AssertionError(f"no process of rank {rank}")


def _env_has(pid, tag, rank):
    env = environ_of(pid)
    if (f'TSM_TEST_TAG={tag}'.encode() not in env
            or f'PADDLE_TRAINER_ID={rank}'.encode() not in env):
        return False
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            cmd = f.read()
    except OSError:
        return False
    return b'faulty_train.py' in cmd and b'paddle.distributed.launch' not in cmd


def wait_for_log(logs, text, proc, timeout=120):
    t0 = time.time()
    while text not in read_logs(logs)[0]:
        assert proc.poll() is None, read_logs(logs)[0][-3000:]
        assert time.time() - t0 < timeout, read_logs(logs)[0][-3000:]
        time.sleep(0.2)


@pytest.mark.parametrize('sig, victim', [(signal.SIGTERM, 1), (signal.SIGINT, 0)])
def test_a_signal_to_one_rank_stops_all_and_resume_matches(data, uninterrupted, sig, victim):
    name = f'signal{int(sig)}'
    proc, logs, out = launch(data, name, '--epoch', '2')
    wait_for_log(logs, 'Epoch 0, iter 1/', proc)
    os.kill(rank_pid(proc.tag, victim), sig)
    rc, (log0, log1) = finish(proc, logs)
    assert rc != 0
    lines = [error_lines(log0), error_lines(log1)]
    assert len(lines[0]) == 1 and lines[0] == lines[1], lines  # the same line on both ranks
    assert re.match(r'error: interrupted at epoch 0, iteration \d+: saved .*; continue with '
                    r'--resume ', lines[0][0])
    if sig != signal.SIGTERM:
        return
    # resume on "another machine": rank 1's save dir is empty, rank 0's holds the checkpoint
    proc, logs, _ = launch(data, name, '--epoch', '2', '--resume', 'latest',
                           env={'TSM_FAULT_OWN_SAVE_DIR': str(data['dir'] / name / 'own')})
    rc, (log0, log1) = finish(proc, logs)
    assert rc == 0, log0[-3000:] + log1[-3000:]
    assert 'resumed from' in log0
    ref, got = weights(uninterrupted[0] / 'TSM.pdparams'), weights(out / 'TSM.pdparams')
    assert ref.keys() == got.keys()
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_nan_on_one_rank_stops_every_rank_with_the_same_line(data):
    proc, logs, out = launch(data, 'nan', '--epoch', '2', env={'TSM_FAULT_NAN': '1:1:0'})
    rc, (log0, log1) = finish(proc, logs)
    assert rc != 0
    assert error_lines(log0) == error_lines(log1) != []
    assert re.match(r'error: loss is not finite at epoch 1 iteration \d+ on rank 1; stopping',
                    error_lines(log0)[0])
    assert all(np.isfinite(v).all() for v in weights(out / 'TSM_epoch0.pdparams').values())


def test_a_checkpoint_rank_0_cannot_write_stops_every_rank(data):
    proc, logs, _ = launch(data, 'nospace', '--epoch', '2', env={'TSM_FAULT_NOSPACE': '0'})
    rc, (log0, log1) = finish(proc, logs)
    assert rc != 0
    assert error_lines(log0) == error_lines(log1) != []
    assert re.match(r'error: cannot write checkpoint .*TSM_epoch0 \(No space left on device\)',
                    error_lines(log0)[0])


def test_every_video_failing_stops_every_rank(data):
    proc, logs, _ = launch(data, 'allfail', '--epoch', '1', '-o',
                           f"TRAIN.filelist={data['dir'] / 'all_empty.list'}")
    rc, (log0, log1) = finish(proc, logs)
    assert rc != 0
    assert error_lines(log0) == error_lines(log1) != []
    assert error_lines(log0)[0].startswith('error: every video of ')


def test_a_dead_rank_ends_the_distributed_run(data):
    """A rank SIGKILLed mid-epoch (as by the OOM killer): the launcher ends the run with an
    error well before its 50 epochs, and every process of the run (the other rank, the
    loader workers of both, the launcher) is gone within 10 s of its end."""
    proc, logs, out = launch(data, 'dead', '--epoch', '50')
    wait_for_log(logs, 'Epoch 0, iter 1/', proc)
    os.kill(rank_pid(proc.tag, 1), signal.SIGKILL)
    rc, (log0, _) = finish(proc, logs, timeout=120)
    assert rc != 0
    assert gone_within(proc.tag, 10) == []  # the dead rank's workers died with it
    assert 'Epoch 1 done' not in log0 and not (out / 'TSM.pdparams').exists()
