"""End to end through the command line, at tiny size: train -> eval -> predict -> export,
resume continuity, reproducibility, and a 2-process data-parallel run."""
import json
import re

import numpy as np
import paddle
import pytest

from tests.conftest import run_cli, run_main, run_scripts
from utils.safe_pickle import safe_load

TRAIN = ['train.py', '--model_name', 'tsm', '--pretrain', 'none', '--fix_random_seed', 'True',
         '--log_interval', '1']


def train(cfg, save_dir, *extra, env=None):
    res = run_cli(*TRAIN, '--config', cfg, '--save_dir', str(save_dir), *extra, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def weights(path):
    return {k: v for k, v in safe_load(str(path)).items() if isinstance(v, np.ndarray)}


@pytest.fixture(scope='module')
def run2(tmp_path_factory):
    """One 2-epoch training for the tests that read it (none writes into its folder)."""
    from testing.tiny import make_tiny_dataset
    data = make_tiny_dataset(tmp_path_factory.mktemp('run2'))
    out = data['dir'] / 'ckpt'
    res = train(data['config'], out)
    return data, out, res


def test_train_eval_predict_export(run2, tmp_path):
    data, out, res = run2
    log = res.stdout
    line = re.search(r'\[TRAIN\] Epoch 1, iter 1/2, loss: [\d.]+, top1: [\d.]+, top5: [\d.]+, '
                     r'lr: 0\.001000, reader_cost: [\d.]+ s, batch_cost: [\d.]+ s, ips: [\d.]+', log)
    assert line, log[-2000:]  # piecewise LR: 0.01 in epoch 0, 0.001 after decay epoch 1
    assert 'lr: 0.010000' in log and '[VALID] Epoch 1' in log
    for name in ('TSM_epoch0.pdparams', 'TSM_epoch0.pdopt', 'TSM_epoch1.pdparams',
                 'TSM_epoch1.pdopt', 'TSM.pdparams', 'history.json'):
        assert (out / name).is_file(), name
    saved = safe_load(str(out / 'TSM.pdparams'))  # the options travel with the weights
    assert saved['__tsm_options__']['shift_direction'] == 'paddle'
    assert saved['__tsm_options__']['head'] == 'feature_mean'
    opt = safe_load(str(out / 'TSM_epoch1.pdopt'))
    assert opt['epoch'] == 1 and opt['step'] == 4 and opt['config']['MODEL']['num_layers'] == 18
    history = json.loads((out / 'history.json').read_text())
    assert [h['epoch'] for h in history] == [0, 1] and history[1]['valid']['num_videos'] == 5

    cfg = data['config']
    # top-5 below the class count: the trained network with a 7-class FC whose weights are
    # zero, so every video's logits are its bias: labels 0 and 1 rank 1st and 2nd, label 2
    # ranks 7th.  Videos labelled 0,1,2,0,1: top-1 2/5, top-5 4/5 (hand-computed).
    bias = np.array([6, 5, 0, 4, 3, 2, 1], np.float32)
    state = safe_load(str(out / 'TSM.pdparams'))
    state['fc.weight'] = np.zeros((state['fc.weight'].shape[0], 7), np.float32)
    state['fc.bias'] = bias
    paddle.save(state, str(tmp_path / 'seven.pdparams'))
    one = data['lines'][3].rsplit(' ', 1)[0]
    trained = ['--config', cfg, '--weights', str(out / 'TSM.pdparams')]
    ev, ev7, pr, pr1, ex = run_scripts(  # one interpreter: what they share is on disk
        ('eval.py', *trained, '--save_dir', str(tmp_path / 'ev'), '--batch_size', '2'),
        ('eval.py', '--config', cfg, '--weights', str(tmp_path / 'seven.pdparams'),
         '--save_dir', str(tmp_path / 'ev7'), '-o', 'MODEL.num_classes=7'),
        ('predict.py', *trained, '--save_dir', str(tmp_path / 'pr'), '--infer_topk', '2',
         '--precision', 'fp32'),  # the default is bf16 where the CPU has it
        ('predict.py', *trained, '--save_dir', str(tmp_path / 'pr1'), '--video_path', one,
         '--infer_topk', '3'),
        ('inference_model.py', *trained, '--save_dir', str(tmp_path / 'inf'), '--batch',
         '-1'))  # any batch: 3 clips
    assert ev.returncode == 0, ev.stderr
    top1 = float(re.search(r'^TOP1_ACC: ([\d.]+)$', ev.stdout, re.M).group(1))
    result = json.loads((tmp_path / 'ev' / 'eval_results.json').read_text())
    assert result['num_videos'] == 5 and result['num_failed'] == 0  # 2+2+1: last batch kept
    assert result['top1'] == pytest.approx(top1, abs=1e-5)
    # eval.py's figures against the eager model's log-probabilities of the same clips,
    # scored here with numpy
    from models import get_model, load_weights
    from reader import get_reader
    from utils.config_utils import parse_config
    model = get_model('TSM', parse_config(cfg), 'test')
    load_weights(model, str(out / 'TSM.pdparams'))
    clips = get_reader('TSM', 'test', parse_config(cfg))
    labels = np.array([int(ln.rsplit(' ', 1)[1]) for ln in data['lines'][:5]])
    with paddle.no_grad():
        logits = model(paddle.to_tensor(np.stack([clips[i][0] for i in range(5)]))).numpy()
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert result['top1'] == pytest.approx((logp.argmax(axis=1) == labels).mean())
    assert result['loss'] == pytest.approx(-logp[np.arange(5), labels].mean(), abs=1e-4)
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (labels, logp.argmax(axis=1)), 1)
    np.testing.assert_array_equal(np.load(tmp_path / 'ev' / 'confusion.npy'), confusion)

    assert ev7.returncode == 0, ev7.stderr
    assert re.search(r'^TOP1_ACC: 0\.40000$', ev7.stdout, re.M), ev7.stdout
    assert re.search(r'^TOP5_ACC: 0\.80000$', ev7.stdout, re.M), ev7.stdout
    seven = json.loads((tmp_path / 'ev7' / 'eval_results.json').read_text())
    log_z = np.log(np.exp(bias.astype(np.float64)).sum())
    assert seven['loss'] == pytest.approx(log_z - (6 + 5 + 0 + 6 + 5) / 5, abs=1e-5)
    assert seven['mean_class_acc'] == pytest.approx(1 / 3)  # classes 0, 1, 2: recall 1, 0, 0

    assert pr.returncode == 0, pr.stderr
    records = json.loads((tmp_path / 'pr' / 'predict_results.json').read_text())
    assert [r['path'] for r in records] == [ln.rsplit(' ', 1)[0] for ln in data['lines'][:2]]
    for i, r in enumerate(records):  # the infer list is the first 2 videos, same sizes
        order = np.argsort(-logp[i])[:2]
        assert r['top_names'] == [['red', 'green', 'blue'][k] for k in order]
        np.testing.assert_allclose(r['top_probs'], np.exp(logp[i, order]), atol=1e-5)
        assert f"    {r['top_names'][0]}: {r['top_probs'][0]:.5f}" in pr.stdout
    assert pr1.returncode == 0, pr1.stderr
    single = json.loads((tmp_path / 'pr1' / 'predict_results.json').read_text())
    assert len(single) == 1 and single[0]['path'] == one and len(single[0]['top_names']) == 3

    assert ex.returncode == 0, ex.stderr
    exported = paddle.jit.load(str(tmp_path / 'inf' / 'TSM'))
    exported.eval()
    x = paddle.randn([3, 4, 3, 32, 32])
    eager = paddle.nn.functional.softmax(model(x), axis=-1).numpy()
    assert np.abs(exported(x).numpy() - eager).max() < 1e-5


def test_resume_continues_where_it_stopped_and_runs_repeat(run2):
    data, full, full_res = run2
    part = data['dir'] / 'part'
    first = train(data['config'], part, '--epoch', '1')
    # same seed, same data: epoch 0 of both runs logs the same losses
    losses = lambda log, e: re.findall(rf'Epoch {e}, iter \d+/\d+, loss: ([\d.]+)', log)
    assert losses(first.stdout, 0) == losses(full_res.stdout, 0) != []
    resumed = train(data['config'], part, '--resume', str(part / 'TSM_epoch0'))
    assert 'continuing at epoch 1' in resumed.stdout and 'Epoch 0, iter' not in resumed.stdout
    assert losses(resumed.stdout, 1) == losses(full_res.stdout, 1) != []
    a, b = weights(full / 'TSM.pdparams'), weights(part / 'TSM.pdparams')
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    history = json.loads((part / 'history.json').read_text())
    assert [h['epoch'] for h in history] == [0, 1]
    bad = run_cli(*TRAIN, '--config', data['config'], '--resume', str(part / 'nothing'))
    assert bad.returncode == 2 and 'nothing.pdparams' in bad.stderr
    assert bad.stderr.count('\n') == 1


def test_resume_from_released_weights_only_starts_at_epoch_0(run2, tmp_path):
    """The model zoo told its users to point --resume at the released model to finetune:
    weights without a .pdopt load, and training starts at epoch 0, fresh optimizer."""
    data, full, _ = run2
    released = tmp_path / 'TSM.pdparams'
    released.write_bytes((full / 'TSM.pdparams').read_bytes())  # no .pdopt beside it
    res = train(data['config'], tmp_path / 'ft', '--epoch', '1', '--learning_rate', '0',
                '--resume', str(tmp_path / 'TSM'))
    assert re.search(r'weights only \(no .*TSM\.pdopt beside them\).*epoch 0', res.stdout)
    assert 'Epoch 0, iter 0/' in res.stdout
    # learning rate 0: the parameters end as the released file holds them (batch-norm
    # statistics still move in training mode); from scratch they would differ
    trained, start = weights(tmp_path / 'ft' / 'TSM.pdparams'), weights(released)
    params = [k for k in start if not k.endswith(('_mean', '_variance'))]
    assert len(params) > 10
    for k in params:
        np.testing.assert_array_equal(trained[k], start[k], err_msg=k)


def test_use_gpu_true_without_gpu_is_a_clear_error(tiny_dataset):
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        pytest.skip('this machine has a GPU')  # the error path only exists without one
    import train as train_script  # the error comes before any work: in this process
    code, _, err = run_main(train_script.main, *TRAIN[1:], '--config', tiny_dataset['config'],
                            '--use_gpu', 'True', '--cpu_threads', '1')
    assert code == 2
    assert err.startswith('error: --use_gpu True, but') and err.count('\n') == 1


def test_two_process_data_parallel_training_and_eval(tiny_dataset, tmp_path):
    cfg, out = tiny_dataset['config'], tmp_path / 'dist'
    res = run_cli('-m', 'paddle.distributed.launch', '--nproc_per_node', '2', '--log_dir',
                  str(tmp_path / 'log'), *TRAIN, '--config', cfg, '--save_dir', str(out),
                  '--epoch', '1', timeout=400)
    logs = {i: (tmp_path / 'log' / f'workerlog.{i}').read_text() for i in (0, 1)}
    assert res.returncode == 0, logs[0][-3000:] + logs[1][-3000:]
    # global batch 4 split in 2 x 2; each rank reads its own half of the 7 videos: 2 steps
    assert re.search(r'Epoch 0, iter 1/2, loss', logs[0])
    assert '[TRAIN]' not in logs[1]  # only rank 0 logs and saves
    assert (out / 'TSM_epoch0.pdparams').is_file() and (out / 'TSM.pdparams').is_file()
    history = json.loads((out / 'history.json').read_text())
    assert history[0]['train']['num_videos'] == 8  # 7 videos, padded to 2 x 4 by the sampler
    assert history[0]['valid']['num_videos'] == 5  # evaluation: every video exactly once

    ev = run_cli('-m', 'paddle.distributed.launch', '--nproc_per_node', '2', '--log_dir',
                 str(tmp_path / 'log_eval'), 'eval.py', '--config', cfg, '--weights',
                 str(out / 'TSM.pdparams'), '--save_dir', str(tmp_path / 'ev'), timeout=400)
    assert ev.returncode == 0, (tmp_path / 'log_eval' / 'workerlog.0').read_text()[-3000:]
    result = json.loads((tmp_path / 'ev' / 'eval_results.json').read_text())
    assert result['num_videos'] == 5
    single = run_cli('eval.py', '--config', cfg, '--weights', str(out / 'TSM.pdparams'),
                     '--save_dir', str(tmp_path / 'ev1'))
    assert single.returncode == 0, single.stderr[-2000:]
    one = json.loads((tmp_path / 'ev1' / 'eval_results.json').read_text())
    assert one['top1'] == pytest.approx(result['top1']) and one['loss'] == pytest.approx(
        result['loss'], rel=1e-4)
