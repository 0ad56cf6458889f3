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
from tests.conftest import TINY, run_cli, write_config
from utils import checkpoint, jobs
from utils.cli import run_job
from utils.config_utils import parse_config
from utils.engine import Amp, evaluate
from utils.ranks import Ranks


def test_amp_on_the_cpu_is_a_one_line_error(tiny_dataset):
    res = run_cli('train.py', '--pretrain', 'none', '--config', tiny_dataset['config'],
                  '--use_gpu', 'False', '-o', 'TRAIN.amp=True')
    assert res.returncode == 2
    assert res.stderr.startswith("error: TRAIN.amp needs a GPU") and res.stderr.count('\n') == 1


class RecordingScaler:
    """A scaler that is on (as on a GPU) and records the state it is given."""
    _enable = True

    def __init__(self):
        self.loaded = None

    def load_state_dict(self, state):
        self.loaded = state


def _tiny_model(tmp_path):
    cfg = parse_config(write_config(tmp_path / 'c.yaml', TINY))
    return get_model('TSM', cfg, 'train')


def test_resume_restores_the_loss_scale(tmp_path):
    model = _tiny_model(tmp_path)
    opt = paddle.optimizer.Momentum(parameters=model.parameters())
    saved = {'scale': np.array([1024.0], np.float32), 'incr_ratio': 2.0, 'decr_ratio': 0.5,
             'incr_every_n_steps': 1000, 'decr_every_n_nan_or_inf': 2, 'incr_count': 7,
             'decr_count': 1, 'use_dynamic_loss_scaling': True}
    prefix = str(tmp_path / 'TSM_epoch0_iter1')
    checkpoint.save_checkpoint(prefix, model, opt, epoch=0, next_iter=1, steps_per_epoch=3,
                               step=1, seed=5, scaler=saved)
    scaler = RecordingScaler()
    args = argparse.Namespace(resume=prefix, pretrain='none', save_dir=str(tmp_path),
                              model_name='TSM')
    start = jobs.init_weights(_tiny_model(tmp_path), opt, scaler, args, 3, 0, Ranks())
    assert start == (0, 1, 5)
    assert scaler.loaded['incr_count'] == 7 and scaler.loaded['decr_count'] == 1
    np.testing.assert_array_equal(scaler.loaded['scale'], [1024.0])


def test_evaluation_runs_under_the_training_autocast(tiny_dataset):
    from reader import get_reader
    from utils.loader import build_loader
    cfg = parse_config(tiny_dataset['config'])
    entered = []

    class RecordingAmp(Amp):
        def autocast(self):
            entered.append(self.level)
            return contextlib.nullcontext()

    loader = build_loader(get_reader('TSM', 'valid', cfg), 4, 0)
    evaluate(get_model('TSM', cfg, 'valid'), loader, amp=RecordingAmp(True, 'O2', 'float16'))
    assert entered == ['O2'] * len(loader)


def test_deep_models_without_pretrain_warn(caplog):
    model = argparse.Namespace(backbone_depth=101)
    with caplog.at_level(logging.INFO):
        jobs._pretrain(model, None)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and 'ResNet-101' in warned[0] and 'from scratch' in warned[0]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        jobs._pretrain(model, 'none')  # said explicitly: no warning
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
    res = run_cli('eval.py', '--model_name', 'NoSuchNet', '--config', tiny_dataset['config'])
    assert res.returncode == 2
    assert res.stderr.startswith("error: unknown model 'NoSuchNet' (known: ")
    assert res.stderr.count('\n') == 1
    missing = run_cli('predict.py', '--config', tiny_dataset['config'], '--video_path',
                      str(tiny_dataset['dir'] / 'no_such_folder_or_video'), '--weights',
                      str(tiny_dataset['dir'] / 'none.pdparams'))
    assert missing.returncode == 2 and 'Traceback' not in missing.stderr
