"""What a checkpoint on disk promises: `.pdopt` is written before `.pdparams`, so a
`.pdparams` alone is the trace of a write that did not finish and `--resume latest` passes
it over; a checkpoint or history.json that cannot be written stops a single-process run
with one line and keeps the last good checkpoint (several ranks: test_distributed.py)."""
import os

import paddle
import pytest

from testing.tiny import TINY, write_config
from tests.conftest import run_cli
from training import checkpoint
from utils.config_utils import parse_config

TRAIN = ['--pretrain', 'none', '--fix_random_seed', 'True', '--log_interval', '1',
         '--valid_interval', '0', '--epoch', '2']


def tiny(tmp_path):
    from models import get_model
    model = get_model('TSM', parse_config(write_config(tmp_path / 'c.yaml', TINY)), 'train')
    return model, paddle.optimizer.Momentum(parameters=model.parameters())


def test_pdopt_is_written_before_pdparams(tmp_path, monkeypatch):
    model, opt = tiny(tmp_path)
    written, real = [], checkpoint.atomic_save
    monkeypatch.setattr(checkpoint, 'atomic_save',
                        lambda obj, path: (written.append(os.path.basename(path)), real(obj, path)))
    checkpoint.save_checkpoint(str(tmp_path / 'TSM_epoch0'), model, opt, epoch=0)
    assert written == ['TSM_epoch0.pdopt', 'TSM_epoch0.pdparams']

    def full_disk(obj, path):
        raise OSError(28, 'No space left on device', path)
    monkeypatch.setattr(checkpoint, 'atomic_save', full_disk)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(str(tmp_path / 'TSM_epoch1'), model, opt, epoch=1)
    assert not os.path.exists(tmp_path / 'TSM_epoch1.pdparams')


def test_resume_latest_passes_over_weights_without_their_pdopt(tmp_path):
    model, opt = tiny(tmp_path)
    checkpoint.save_checkpoint(str(tmp_path / 'TSM_epoch0'), model, opt, epoch=0)
    checkpoint.save_checkpoint(str(tmp_path / 'TSM_epoch1_iter1'), model, opt, epoch=1)
    os.remove(tmp_path / 'TSM_epoch1_iter1.pdopt')  # as if the run died between the two
    checkpoint.save_weights(model, str(tmp_path / 'TSM_epoch2.pdparams'))  # weights only
    assert checkpoint.find_latest(str(tmp_path), 'TSM') == str(tmp_path / 'TSM_epoch0')


@pytest.mark.parametrize('fault', ['checkpoint', 'history'])
def test_a_write_that_fails_stops_one_process_with_one_line(tiny_dataset, tmp_path, fault):
    out = tmp_path / 'out'
    env = {}
    if fault == 'checkpoint':
        env['TSM_FAULT_NOSPACE'] = '1'  # the checkpoint that ends epoch 1
    else:
        os.makedirs(out / 'history.json')  # a folder where the file goes: cannot be replaced
    res = run_cli('tests/faulty_train.py', *TRAIN, '--config', tiny_dataset['config'],
                  '--save_dir', str(out), env=env)
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    lines = res.stderr.strip().split('\n')
    assert len(lines) == 1
    what = 'checkpoint ' + str(out / 'TSM_epoch1') if fault == 'checkpoint' else \
        str(out / 'history.json')
    assert lines[0].startswith(f'error: cannot write {what} (')
    assert lines[0].endswith('stopping (free some space or change --save_dir, then '
                             '--resume latest)')
    assert checkpoint.find_latest(str(out), 'TSM') == str(out / 'TSM_epoch0')
    assert not os.path.exists(out / 'TSM.pdparams')
