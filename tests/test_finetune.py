"""Finetuning from Kinetics onto UCF101 / HMDB51: the shipped configs and label lists, the
list builders on fake dataset trees, and --pretrain with another class count through
train.py at tiny size.  Loading weights: a model option given with -o beats the one the
weights carry, a config file's yields to it."""
import pickle
import re

import numpy as np
import pytest

from data import build_hmdb51_lists, build_ucf101_lists
from tests.conftest import run_cli
from utils.config_utils import parse_config
from reader.inputs import read_labels
from utils.safe_pickle import safe_load


def names(path):
    with open(path) as f:
        return [ln.split(None, 1)[1].strip() for ln in f if ln.strip()]


def test_label_lists_have_the_official_classes_in_order():
    ucf = names('data/ucf101_label_list.txt')
    assert len(ucf) == len(set(ucf)) == 101
    # classInd.txt: 1 ApplyEyeMakeup ... 37 HandstandPushups ... 101 YoYo
    assert (ucf[0], ucf[2], ucf[36], ucf[99], ucf[100]) == (
        'ApplyEyeMakeup', 'Archery', 'HandstandPushups', 'WritingOnBoard', 'YoYo')
    hmdb = names('data/hmdb51_label_list.txt')
    assert len(hmdb) == len(set(hmdb)) == 51 and hmdb == sorted(hmdb)
    assert (hmdb[0], hmdb[21], hmdb[45], hmdb[50]) == ('brush_hair', 'kick_ball',
                                                      'sword_exercise', 'wave')


@pytest.mark.parametrize('name,classes', [('ucf101', 101), ('hmdb51', 51)])
def test_configs_fit_their_label_lists(name, classes):
    cfg = parse_config(f'configs/tsm_{name}.yaml')
    assert cfg.MODEL.num_classes == classes
    assert len(read_labels(cfg.INFER.kinetics_labels, classes)) == classes
    assert cfg.TRAIN.learning_rate < parse_config('configs/tsm.yaml').TRAIN.learning_rate
    assert name in cfg.TRAIN.filelist and name in cfg.TEST.filelist


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')
    return str(path)


def read_list(path):
    with open(path) as f:
        return [(p, int(label)) for p, label in (ln.rsplit(' ', 1) for ln in f.read().splitlines())]


def test_ucf101_lists_from_the_official_split_files(tmp_path):
    root, splits = tmp_path / 'UCF-101', tmp_path / 'ucfTrainTestlist'
    ucf = names('data/ucf101_label_list.txt')
    splits.mkdir()
    (splits / 'classInd.txt').write_text(''.join(f'{i + 1} {n}\n' for i, n in enumerate(ucf)))
    a = touch(root / 'ApplyEyeMakeup' / 'v_ApplyEyeMakeup_g08_c01.avi')
    h = touch(root / 'HandstandPushups' / 'v_HandStandPushups_g08_c01.avi')  # sic
    y = touch(root / 'YoYo' / 'v_YoYo_g01_c01.avi')
    (splits / 'trainlist01.txt').write_text(
        'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n'
        'HandstandPushups/v_HandStandPushups_g08_c01.avi 37\r\n'
        'YoYo/v_YoYo_g25_c05.avi 101\r\n')  # not on disk
    (splits / 'testlist01.txt').write_text('YoYo/v_YoYo_g01_c01.avi\n')
    out = tmp_path / 'lists'
    r = build_ucf101_lists.main(['--root', str(root), '--splits', str(splits), '--split', '1',
                                 '--out_dir', str(out)])
    assert (r['train'], r['val'], r['missing']) == (2, 1, 1)
    assert read_list(out / 'ucf101_train_split_1.list') == [(a, 0), (h, 36)]
    assert read_list(out / 'ucf101_val_split_1.list') == [(y, 100)]
    (splits / 'trainlist01.txt').write_text('YoYo/v_YoYo_g01_c01.avi 100\n')
    with pytest.raises(SystemExit, match="index 100 is not class 'YoYo'"):
        build_ucf101_lists.main(['--root', str(root), '--splits', str(splits),
                                 '--out_dir', str(out)])
    (splits / 'classInd.txt').write_text('1 YoYo\n2 ApplyEyeMakeup\n')
    with pytest.raises(SystemExit, match='does not list the classes'):
        build_ucf101_lists.main(['--root', str(root), '--splits', str(splits),
                                 '--out_dir', str(out)])


def test_hmdb51_lists_from_the_official_split_files(tmp_path):
    root, splits = tmp_path / 'hmdb51', tmp_path / 'splits'
    hmdb = names('data/hmdb51_label_list.txt')
    splits.mkdir()
    for cls in hmdb:
        for n in (1, 2, 3):  # other splits are ignored
            (splits / f'{cls}_test_split{n}.txt').write_text(
                f'{cls}_a.avi 1 \n{cls}_b.avi 2 \n{cls}_c.avi 0 \n' if n == 1 else 'x.avi 1\n')
        for v in 'abc':
            if (cls, v) != ('wave', 'b'):  # one test video missing
                touch(root / cls / f'{cls}_{v}.avi')
    out = tmp_path / 'lists'
    r = build_hmdb51_lists.main(['--root', str(root), '--splits', str(splits), '--split', '1',
                                 '--out_dir', str(out)])
    assert (r['train'], r['val'], r['missing']) == (51, 50, 1)
    assert r['missing_examples'] == ['wave/wave_b.avi']
    train = read_list(out / 'hmdb51_train_split_1.list')
    assert [label for _, label in train] == list(range(51))
    assert train[21] == (str(root / 'kick_ball' / 'kick_ball_a.avi'), 21)
    assert all(p.endswith('_b.avi') for p, _ in read_list(out / 'hmdb51_val_split_1.list'))
    (splits / 'wave_test_split1.txt').unlink()
    with pytest.raises(SystemExit, match='split 1 files for 50 of 51 classes .none for wave'):
        build_hmdb51_lists.main(['--root', str(root), '--splits', str(splits),
                                 '--out_dir', str(out)])


def test_pretrain_from_kinetics_weights_through_train_py(tiny_dataset, tmp_path):
    """A 400-class checkpoint (converted from MIT: it brings its shift options) into
    configs/tsm_ucf101.yaml's 101 classes, shrunk to tiny size: every weight but the FC
    loads, the log says so, and with lr 0 the backbone ends as it was loaded."""
    from models import get_model
    from models.weight_files import OPTIONS_KEY
    cfg = parse_config('configs/tsm.yaml')
    cfg.MODEL.update(num_layers=18, seg_num=4)
    kinetics = get_model('TSM', cfg, 'infer')
    state = {k: v.numpy() for k, v in kinetics.state_dict().items()}
    state[OPTIONS_KEY] = dict(shift_direction='mit', shift_ratio=0.125, shift_place='blockres',
                              shift_every=1, head='logit_mean', source='mit', num_layers=18,
                              num_classes=400)
    pretrain = tmp_path / 'kinetics.pdparams'
    with open(pretrain, 'wb') as f:
        pickle.dump(state, f, protocol=4)
    d = tiny_dataset['dir']
    overrides = ['MODEL.num_layers=18', 'MODEL.seg_num=4', 'TRAIN.epoch=1',
                 'TRAIN.learning_rate=0.0', 'TRAIN.batch_size=4', 'TRAIN.use_gpu=False',
                 f"TRAIN.filelist={d / 'train.list'}"]
    for section in ('TRAIN', 'VALID', 'TEST', 'INFER'):
        overrides += [f'{section}.short_size=36', f'{section}.target_size=32',
                      f'{section}.num_reader_threads=0']
    out = tmp_path / 'ckpt'
    res = run_cli('train.py', '--config', 'configs/tsm_ucf101.yaml', '--pretrain', str(pretrain),
                  '--valid_interval', '0', '--fix_random_seed', 'True', '--save_dir', str(out),
                  *[a for o in overrides for a in ('-o', o)])
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    assert re.search(r'loaded everything but the FC \(class count 400 != 101\)', log), log[-3000:]
    assert 'shift_direction paddle -> mit' in log and 'head feature_mean -> logit_mean' in log
    final = safe_load(str(out / 'TSM.pdparams'))
    assert final['fc.weight'].shape == (512, 101)
    for key in ('backbone.stem.conv.weight', 'backbone.blocks.7.branch.1.conv.weight'):
        np.testing.assert_array_equal(final[key], state[key])


# ---- a model option given explicitly (-o, a flag) beats the one the weights carry ----

def tiny_tsm_weights(path, shift_ratio=0.125):
    """A random ResNet-18 TSM of 3 classes and 4 segments saved as train.py saves it (its
    options beside the weights: shift_ratio 0.125).  -> the state dict (numpy)."""
    import paddle
    from models.tsm import TSM
    from training.checkpoint import save_weights
    paddle.seed(3)
    model = TSM(num_classes=3, seg_num=4, num_layers=18, shift_ratio=shift_ratio)
    save_weights(model, str(path))
    return {k: v.numpy() for k, v in model.state_dict().items()}


def tiny_config(tmp_path, **model):
    from testing.tiny import tiny_sections, write_config
    sections = tiny_sections()
    sections['MODEL'].update(model)
    return write_config(tmp_path / 'tiny.yaml', sections)


def loaded(config, weights, overrides):
    """The model as eval/predict/export build it: config file, -o, then the weights."""
    import argparse
    from models import get_model, load_weights
    from utils.cli import load_config
    from utils.config_utils import explicit_keys
    cfg = load_config(argparse.Namespace(config=config, override=overrides), 'INFER',
                      {'batch_size': None})
    model = get_model('TSM', cfg, 'infer')
    load_weights(model, str(weights), keep=explicit_keys(cfg, 'MODEL'))
    return model


def test_shift_ratio_given_with_o_beats_the_weights(tmp_path, caplog):
    import logging
    weights = tmp_path / 'tsm.pdparams'
    tiny_tsm_weights(weights)
    with caplog.at_level(logging.WARNING):
        model = loaded(tiny_config(tmp_path), weights, ['MODEL.shift_ratio=0'])
    assert model.options()['shift_ratio'] == 0.0
    assert model.backbone.shift_ratio == 0.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any('keeping MODEL.shift_ratio=0 as given on the command line' in w and
               'trained with shift_ratio=0.125' in w for w in warnings), warnings
    assert not any('overriding the config' in w for w in warnings), warnings


def test_shift_ratio_in_the_config_file_yields_to_the_weights(tmp_path, caplog):
    import logging
    weights = tmp_path / 'tsm.pdparams'
    tiny_tsm_weights(weights)
    with caplog.at_level(logging.WARNING):
        model = loaded(tiny_config(tmp_path, shift_ratio=0.0), weights, [])
    assert model.options()['shift_ratio'] == 0.125
    assert 'shift_ratio 0.0 -> 0.125' in caplog.text and 'keeping' not in caplog.text
    # an explicit value equal to the weights' one: nothing to warn about
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model = loaded(tiny_config(tmp_path), weights, ['MODEL.shift_ratio=0.125'])
    assert model.options()['shift_ratio'] == 0.125 and caplog.text == ''


def test_inference_model_exports_tsn_from_tsm_weights_with_o(tmp_path):
    """inference_model.py --weights <TSM weights> -o MODEL.shift_ratio=0: the exported
    program computes what a TSN (no shift) with those weights computes, not the TSM."""
    import paddle
    from models.tsm import TSM
    weights = tmp_path / 'tsm.pdparams'
    state = tiny_tsm_weights(weights)
    res = run_cli('inference_model.py', '--config', tiny_config(tmp_path), '--weights',
                  str(weights), '--save_dir', str(tmp_path / 'inf'), '-o', 'MODEL.shift_ratio=0',
                  '--batch', '-1')  # any batch: 2 clips
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'keeping MODEL.shift_ratio=0' in res.stdout + res.stderr
    exported = paddle.jit.load(str(tmp_path / 'inf' / 'TSM'))
    exported.eval()
    x = paddle.to_tensor(np.random.default_rng(5).standard_normal((2, 4, 3, 32, 32))
                         .astype('float32'))
    got = exported(x).numpy()
    probs = {}
    for name, ratio in (('tsn', 0.0), ('tsm', 0.125)):  # the weights set by hand
        eager = TSM(num_classes=3, seg_num=4, num_layers=18, shift_ratio=ratio)
        eager.set_state_dict(state)
        eager.eval()
        probs[name] = paddle.nn.functional.softmax(eager(x), axis=-1).numpy()
    assert np.abs(probs['tsm'] - probs['tsn']).max() > 1e-2  # the shift matters here
    assert np.abs(got - probs['tsn']).max() < 1e-5
