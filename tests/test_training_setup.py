"""What a training run starts from and refuses: AMP where Paddle cannot do it, the loss
scale restored on resume, evaluation under training's autocast, deep models without
ImageNet weights, and which errors end in one line (the project's) or keep their
traceback (bugs)."""
import argparse
import contextlib
import logging

import numpy as np
import paddle
import pytest

from models import get_model
from testing.tiny import TINY, write_config
from tests.conftest import run_main
from training import checkpoint, resume
from jobs.entry import run_job
from utils.config_utils import parse_config
from training.loop import Amp
from training.evaluate import evaluate
from training.ranks import Ranks


def test_amp_on_the_cpu_is_a_one_line_error(tiny_dataset):
    import train  # the check comes before any work: in this process
    code, _, err = run_main(train.main, '--pretrain', 'none', '--config', tiny_dataset['config'],
                            '--use_gpu', 'False', '-o', 'TRAIN.amp=True', '--cpu_threads', '1')
    assert code == 2
    assert err.startswith("error: TRAIN.amp needs a GPU") and err.count('\n') == 1


@contextlib.contextmanager
def device_place():
    """GradScaler turns itself off on the CPU: while it is built, the tracer's place says
    GPU, so what follows is the scaler a GPU run has (state_dict and load_state_dict are
    plain Python over its tensors, which live on the CPU here)."""
    import paddle.amp.grad_scaler as gs
    real = gs._dygraph_tracer

    class Place:
        def __init__(self, place):
            self.place = place

        def is_gpu_place(self):
            return True

    class Tracer:
        def __init__(self, tracer):
            self._expected_place = Place(tracer._expected_place)

    gs._dygraph_tracer = lambda: Tracer(real())
    try:
        yield
    finally:
        gs._dygraph_tracer = real


def gpu_scaler(**kw):
    with device_place():
        scaler = paddle.amp.GradScaler(enable=True, **kw)
    assert scaler._enable
    return scaler


def _tiny_model(tmp_path):
    cfg = parse_config(write_config(tmp_path / 'c.yaml', TINY))
    return get_model('TSM', cfg, 'train')


def test_resume_restores_the_loss_scale(tmp_path):
    """A real GradScaler's state (its scale grown by steps) -> the checkpoint -> a fresh
    scaler at resume: the same state."""
    model = _tiny_model(tmp_path)
    opt = paddle.optimizer.Momentum(parameters=model.parameters())
    trained = gpu_scaler(init_loss_scaling=1024.0, incr_every_n_steps=3)
    trained._scale = paddle.to_tensor([4096.0])  # what growth would have made of it
    trained._incr_count, trained._decr_count = 2, 1
    prefix = str(tmp_path / 'TSM_epoch0_iter1')
    checkpoint.save_checkpoint(prefix, model, opt, epoch=0, next_iter=1, steps_per_epoch=3,
                               step=1, seed=5, scaler=trained.state_dict())
    resumed = gpu_scaler(init_loss_scaling=2.0 ** 15)
    args = argparse.Namespace(resume=prefix, pretrain='none', save_dir=str(tmp_path),
                              model_name='TSM')
    start = resume.init_weights(_tiny_model(tmp_path), opt, resumed, args, 3, 0, Ranks())
    assert start == (0, 1, 5)
    got, want = resumed.state_dict(), trained.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)
    assert resumed.get_init_loss_scaling() == 4096.0 and resumed._incr_count == 2


def test_evaluation_runs_under_the_training_autocast(tiny_dataset, monkeypatch):
    """Each evaluation batch runs inside paddle.amp.auto_cast with training's level and
    dtype.  On the CPU Paddle's auto_cast turns itself off (the tracer's AMP level stays
    O0, convolutions stay float32), so what is observed is the call, recorded on its way
    to the real auto_cast."""
    from reader import get_reader
    from training.loader import build_loader
    cfg = parse_config(tiny_dataset['config'])
    real, calls, batches = paddle.amp.auto_cast, [], []

    def recording(**kw):
        calls.append((kw.get('enable'), kw.get('level'), kw.get('dtype')))
        return real(**kw)

    monkeypatch.setattr(paddle.amp, 'auto_cast', recording)
    model = get_model('TSM', cfg, 'valid')
    model.register_forward_post_hook(lambda layer, x, y: batches.append(len(calls)))
    loader = build_loader(get_reader('TSM', 'valid', cfg), 4, 0)
    evaluate(model, loader, amp=Amp(True, 'O2', 'float16'))
    assert set(calls) == {(True, 'O2', 'float16')}
    # every forward ran after an auto_cast of its own had been entered
    assert len(batches) == len(loader) and batches == sorted(set(batches)) and batches[0] >= 1


def test_deep_models_without_pretrain_warn(caplog):
    model = argparse.Namespace(backbone_depth=101, backbone_name='resnet')
    with caplog.at_level(logging.INFO):
        resume._pretrain(model, None)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and 'ResNet-101' in warned[0] and 'from scratch' in warned[0]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        resume._pretrain(model, 'none')  # said explicitly: no warning
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def _args(config):
    return argparse.Namespace(config=config, override=[])


def test_a_bug_keeps_its_traceback(tmp_path):
    config = write_config(tmp_path / 'c.yaml', TINY)

    def job(args, cfg):
        return {}['missing']  # a KeyError: a bug, not the user's mistake

    with pytest.raises(KeyError):
        run_job('eval', _args(config), 'TEST', {}, job)


def test_the_projects_errors_end_in_one_line(tiny_dataset):
    """Both end before any work: the scripts' main() in this process."""
    import eval as eval_script
    import predict
    code, _, err = run_main(eval_script.main, '--model_name', 'NoSuchNet', '--config',
                            tiny_dataset['config'], '--cpu_threads', '1')
    assert code == 2
    assert err.startswith("error: unknown model 'NoSuchNet' (known: ")
    assert err.count('\n') == 1
    code, _, err = run_main(predict.main, '--config', tiny_dataset['config'], '--video_path',
                            str(tiny_dataset['dir'] / 'no_such_folder_or_video'), '--weights',
                            str(tiny_dataset['dir'] / 'none.pdparams'), '--cpu_threads', '1')
    assert code == 2 and 'Traceback' not in err
