"""Published TSM weights give the publisher's outputs here.

Each source's network is written again below from its published code, with functional ops
and a numpy shift (not this project's model classes), and filled with seeded random
weights under the source's own names and layouts (PyTorch layouts for MIT and mmaction2,
as numpy arrays, so torch is not needed).  The weights are converted, loaded into the model
that configs/tsm.yaml builds, and both networks see the same input: their probabilities
must agree to 1e-4.

  modelzoo     PaddleCV/video/models/tsm/tsm_res_model.py (release/1.8)
  paddlevideo  paddlevideo/modeling/backbones/resnet_tsm.py, heads/tsm_head.py
  mit          ops/temporal_shift.py, ops/models.py (mit-han-lab/temporal-shift-module)
  mmaction2    mmaction/models/backbones/resnet_tsm.py, resnet.py, heads/tsm_head.py
"""
import logging
import pickle

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from models import get_model, load_pretrain, load_weights
from models.convert import to_fluid
from models.weight_files import ConvertError
from models.weight_files import OPTIONS_KEY, WeightsError
from tools.convert_weights import convert_file
from tools.convert_weights import main as convert_main
from utils.config_utils import parse_config

ARCH = {18: ('basic', [2, 2, 2, 2]), 50: ('bottleneck', [3, 4, 6, 3]),
        101: ('bottleneck', [3, 4, 23, 3])}
WIDTHS = [64, 128, 256, 512]
TOL = 1e-4
CONFIG_OPTIONS = dict(shift_direction='paddle', shift_ratio=0.125, shift_place='blockres',
                      shift_every=1, head='feature_mean', dropout=0.5)  # configs/tsm.yaml


def config(**model):
    cfg = parse_config('configs/tsm.yaml')
    cfg.MODEL.update(model)
    return cfg


# ---- the shifts, as each source's code computes them -------------------------------------

def paddle_shift(ratio):
    """paddle.nn.functional.temporal_shift (model zoo, PaddleVideo): channels [0, C*r) of
    frame t come from t-1, [C*r, 2*C*r) from t+1, zero-filled at the ends."""
    def shift(x, t):
        nt, c = x.shape[:2]
        v, out = x.reshape(nt // t, t, c, *x.shape[2:]), np.zeros((nt // t, t) + x.shape[1:], x.dtype)
        c1, c2 = int(c * ratio), int(2 * c * ratio)
        out[:, 1:, :c1] = v[:, :-1, :c1]
        out[:, :-1, c1:c2] = v[:, 1:, c1:c2]
        out[:, :, c2:] = v[:, :, c2:]
        return out.reshape(x.shape)
    return shift


def mit_shift(div):
    """MIT TemporalShift.shift / mmaction2 TemporalShift.shift: fold = C // div;
    out[:, :-1, :fold] = x[:, 1:, :fold] ("shift left"), fold..2*fold from t-1."""
    def shift(x, t):
        nt, c = x.shape[:2]
        v, out = x.reshape(nt // t, t, c, *x.shape[2:]), np.zeros((nt // t, t) + x.shape[1:], x.dtype)
        fold = c // div
        out[:, :-1, :fold] = v[:, 1:, :fold]
        out[:, 1:, fold:2 * fold] = v[:, :-1, fold:2 * fold]
        out[:, :, 2 * fold:] = v[:, :, 2 * fold:]
        return out.reshape(x.shape)
    return shift


# ---- each source's names and conventions -------------------------------------------------
# A unit is 'stem' or (stage, index, part) with part 'a', 'b', 'c' (residual convs in order)
# or 'down' (the projection shortcut).

def fluid_block(stage, i, depth):
    if depth in (101, 152) and stage == 2:
        return 'res4a' if i == 0 else f'res4b{i}'
    return f'res{stage + 2}{chr(97 + i)}'


class ModelZoo:
    fc_w, fc_b, torch_fc = 'fc_0.w_0', 'fc_0.b_0', False
    head, place = 'feature_mean', 'blockres'

    def __init__(self, depth):
        self.depth, self.shift = depth, paddle_shift(1 / 8)

    def shifted(self, stage, i):
        return True

    def _name(self, unit):
        if unit == 'stem':
            return 'conv1'
        s, i, part = unit
        return fluid_block(s, i, self.depth) + ('_branch1' if part == 'down' else f'_branch2{part}')

    def conv(self, unit):
        return self._name(unit) + '_weights'

    def bn(self, unit):
        n = self._name(unit)
        bn = 'bn_conv1' if n == 'conv1' else 'bn' + n[3:]
        return {p: f'{bn}_{q}' for p, q in (('scale', 'scale'), ('bias', 'offset'),
                                            ('mean', 'mean'), ('var', 'variance'))}


class PaddleVideo:
    fc_w, fc_b, torch_fc = 'head.fc.weight', 'head.fc.bias', False
    head, place = 'logit_mean', 'blockres'

    def __init__(self, depth, seg_num=8):
        self.depth, self.shift = depth, paddle_shift(1 / seg_num)  # 1.0 / self.num_seg

    def shifted(self, stage, i):
        return True

    def _layer(self, unit):
        if unit == 'stem':
            return 'backbone.conv'
        s, i, part = unit
        sub = {'a': 'conv0', 'b': 'conv1', 'c': 'conv2', 'down': 'short'}[part]
        return f'backbone.{fluid_block(s, i, self.depth)}.{sub}'

    def conv(self, unit):
        return self._layer(unit) + '._conv.weight'

    def bn(self, unit):
        b = self._layer(unit) + '._batch_norm.'
        return {'scale': b + 'weight', 'bias': b + 'bias', 'mean': b + '_mean',
                'var': b + '_variance'}


class MIT:
    fc_w, fc_b, torch_fc = 'module.new_fc.weight', 'module.new_fc.bias', True
    head = 'logit_mean'

    def __init__(self, depth, place='blockres', div=8):
        self.depth, self.place, self.shift = depth, place, mit_shift(div)
        # make_temporal_shift: n_round 2 when layer3 has >= 23 blocks (blockres only)
        self.n_round = 2 if place == 'blockres' and ARCH[depth][1][2] >= 23 else 1

    def shifted(self, stage, i):
        return i % self.n_round == 0

    def _prefix(self, unit):
        s, i, _ = unit
        return f'module.base_model.layer{s + 1}.{i}.' + ('net.' if self.place == 'block' else '')

    def conv(self, unit):
        if unit == 'stem':
            return 'module.base_model.conv1.weight'
        s, i, part = unit
        if part == 'down':
            return self._prefix(unit) + 'downsample.0.weight'
        n = 'abc'.index(part) + 1
        wrapped = self.place == 'blockres' and n == 1 and self.shifted(s, i)
        return self._prefix(unit) + f'conv{n}.' + ('net.' if wrapped else '') + 'weight'

    def bn(self, unit):
        if unit == 'stem':
            b = 'module.base_model.bn1.'
        elif unit[2] == 'down':
            b = self._prefix(unit) + 'downsample.1.'
        else:
            b = self._prefix(unit) + f"bn{'abc'.index(unit[2]) + 1}."
        return {'scale': b + 'weight', 'bias': b + 'bias', 'mean': b + 'running_mean',
                'var': b + 'running_var', 'count': b + 'num_batches_tracked'}


class MMAction2:
    fc_w, fc_b, torch_fc = 'cls_head.fc_cls.weight', 'cls_head.fc_cls.bias', True
    head, place = 'logit_mean', 'blockres'

    def __init__(self, depth, div=8):
        self.depth, self.shift = depth, mit_shift(div)
        self.n_round = 2 if ARCH[depth][1][2] >= 23 else 1

    def shifted(self, stage, i):
        return i % self.n_round == 0

    def _module(self, unit):
        if unit == 'stem':
            return 'backbone.conv1'
        s, i, part = unit
        sub = 'downsample' if part == 'down' else f"conv{'abc'.index(part) + 1}"
        return f'backbone.layer{s + 1}.{i}.{sub}'

    def conv(self, unit):
        wrapped = unit != 'stem' and unit[2] == 'a' and self.shifted(*unit[:2])
        return self._module(unit) + ('.conv.net.weight' if wrapped else '.conv.weight')

    def bn(self, unit):
        b = self._module(unit) + '.bn.'
        return {'scale': b + 'weight', 'bias': b + 'bias', 'mean': b + 'running_mean',
                'var': b + 'running_var', 'count': b + 'num_batches_tracked'}


# ---- the network, written once over a source's names --------------------------------------

def units(depth):
    """(unit, in_channels, out_channels, kernel) of every conv, in order."""
    kind, counts = ARCH[depth]
    yield 'stem', 3, 64, 7
    in_ch = 64
    for s, (w, count) in enumerate(zip(WIDTHS, counts)):
        out = w * 4 if kind == 'bottleneck' else w
        for i in range(count):
            if kind == 'bottleneck':
                yield (s, i, 'a'), in_ch, w, 1
                yield (s, i, 'b'), w, w, 3
                yield (s, i, 'c'), w, out, 1
            else:
                yield (s, i, 'a'), in_ch, w, 3
                yield (s, i, 'b'), w, w, 3
            if i == 0 and (s > 0 or in_ch != out):
                yield (s, i, 'down'), in_ch, out, 1
            in_ch = out


def random_weights(spec, num_classes, seed):
    """Seeded weights under the source's names and layouts (torch Linear is [out, in])."""
    rng = np.random.default_rng(seed)
    w = {}
    feat = None
    damp = min(1.0, 16 / sum(ARCH[spec.depth][1]))  # deeper: smaller residual branches
    for unit, cin, cout, k in units(spec.depth):
        w[spec.conv(unit)] = (rng.standard_normal((cout, cin, k, k), dtype=np.float32)
                              * np.float32(np.sqrt(2.0 / (cin * k * k))))
        # the last BN of a residual branch scaled down, so 16+ blocks stay in range
        last = unit != 'stem' and unit[2] == ('c' if ARCH[spec.depth][0] == 'bottleneck' else 'b')
        names = spec.bn(unit)
        w[names['scale']] = (rng.uniform(0.2 * damp, 0.5 * damp, cout) if last
                             else rng.uniform(0.5, 1.0, cout)).astype('float32')
        w[names['bias']] = rng.normal(0, 0.1, cout).astype('float32')
        w[names['mean']] = rng.normal(0, 0.1, cout).astype('float32')
        w[names['var']] = rng.uniform(0.5, 1.5, cout).astype('float32')
        if 'count' in names:
            w[names['count']] = np.array(1000, dtype=np.int64)
        feat = cout
    fc = rng.normal(0, 3 / np.sqrt(feat), (feat, num_classes)).astype('float32')
    w[spec.fc_w] = np.ascontiguousarray(fc.T) if spec.torch_fc else fc
    w[spec.fc_b] = rng.normal(0, 0.5, num_classes).astype('float32')
    return w


def reference_probs(spec, w, x):
    """The source's network at inference on x [N, T, 3, H, W] -> probabilities [N, K]."""
    kind, counts = ARCH[spec.depth]
    n, t = x.shape[:2]

    def conv_bn(h, unit, stride=1, act=True):
        k = w[spec.conv(unit)]
        h = F.conv2d(paddle.to_tensor(h), paddle.to_tensor(k), stride=stride,
                     padding=(k.shape[-1] - 1) // 2).numpy()
        b = {p: w[name][None, :, None, None] for p, name in spec.bn(unit).items() if p != 'count'}
        h = (h - b['mean']) / np.sqrt(b['var'] + 1e-5) * b['scale'] + b['bias']
        return np.maximum(h, 0) if act else h

    h = conv_bn(x.reshape(n * t, *x.shape[2:]), 'stem', stride=2)
    h = F.max_pool2d(paddle.to_tensor(h), kernel_size=3, stride=2, padding=1).numpy()
    for unit, _, _, _ in units(spec.depth):
        if unit == 'stem' or unit[2] != 'a':
            continue
        s, i, _ = unit
        stride = 2 if i == 0 and s > 0 else 1
        shifted = spec.shifted(s, i)
        inp = spec.shift(h, t) if shifted and spec.place == 'block' else h
        y = spec.shift(inp, t) if shifted and spec.place == 'blockres' else inp
        if kind == 'bottleneck':
            y = conv_bn(conv_bn(conv_bn(y, (s, i, 'a')), (s, i, 'b'), stride), (s, i, 'c'), act=False)
        else:
            y = conv_bn(conv_bn(y, (s, i, 'a'), stride), (s, i, 'b'), act=False)
        short = conv_bn(inp, (s, i, 'down'), stride, act=False) if spec.conv((s, i, 'down')) in w \
            else inp
        h = np.maximum(short + y, 0)
    feat = h.mean(axis=(2, 3))  # [N*T, F]
    fc = w[spec.fc_w].T if spec.torch_fc else w[spec.fc_w]
    if spec.head == 'feature_mean':  # dropout(0.5) downgrade_in_infer, mean over T, fc
        logits = (feat * 0.5).reshape(n, t, -1).mean(axis=1) @ fc + w[spec.fc_b]
    else:  # fc per frame, consensus: mean of the logits over T
        logits = (feat @ fc + w[spec.fc_b]).reshape(n, t, -1).mean(axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def clip(seg_num=8, n=2, size=32, seed=5):
    """Frames with coarse structure that differs from frame to frame (i.i.d. pixel noise
    looks alike to a random network, and the shift would hardly matter)."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((n, seg_num, 3, 4, 4)).astype('float32') * 2
    x = np.kron(coarse, np.ones((size // 4, size // 4), 'float32'))
    return (x + 0.3 * rng.standard_normal(x.shape)).astype('float32')


def ours(model, x):
    return F.softmax(model(paddle.to_tensor(x)), axis=-1).numpy()


def save_pickle(obj, path, protocol=4):
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=protocol)
    return str(path)


def assert_parity(model, spec, w, x):
    got, ref = ours(model, x), reference_probs(spec, w, x)
    diff = float(np.abs(got - ref).max())
    assert diff < TOL, diff
    assert got.max() > 1.5 / got.shape[1]  # not a flat output that agrees by accident
    return diff


# ---- ResNet-50 cases at the config's own size: configs/tsm.yaml, no edit -------------------

@pytest.fixture(scope='module')
def r50_model():
    """The model configs/tsm.yaml builds (ResNet-50, 400 classes, 8 segments), shared:
    every load below sets all weights and options anew."""
    return get_model('TSM', parse_config('configs/tsm.yaml'), 'infer')


def test_paddlevideo_pdparams_load_directly_and_converted(tmp_path, r50_model, caplog):
    spec = PaddleVideo(50)
    w = random_weights(spec, 400, seed=1)
    raw = str(tmp_path / 'TSM_k400.pdparams')
    paddle.save({k: paddle.to_tensor(v) for k, v in w.items()}, raw)  # as PaddleVideo saves
    x = clip()
    with caplog.at_level(logging.INFO, logger='models.weights'):
        load_weights(r50_model, raw)
    assert 'paddlevideo weights; applied the options they need' in caplog.text
    assert 'head=logit_mean' in caplog.text
    assert_parity(r50_model, spec, w, x)
    out = str(tmp_path / 'pv.pdparams')
    convert_file(raw, out, 'paddlevideo')
    load_weights(r50_model, out)
    assert_parity(r50_model, spec, w, x)
    # PaddleVideo shifts 1/num_seg: at 4 segments, 1/4 of the channels each way
    m4 = get_model('TSM', config(seg_num=4), 'infer')
    load_weights(m4, raw)
    assert m4.options()['shift_ratio'] == 0.25
    assert_parity(m4, PaddleVideo(50, seg_num=4), w, clip(seg_num=4))


def test_mit_resnet50_converted_matches_and_the_wrong_direction_does_not(tmp_path, r50_model):
    spec = MIT(50)
    w = random_weights(spec, 400, seed=2)
    src = save_pickle({'epoch': 50, 'arch': 'resnet50', 'state_dict': w},
                      tmp_path / 'TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pkl')
    out = str(tmp_path / 'mit.pdparams')
    options = convert_file(src, out, 'mit')
    assert options['shift_direction'] == 'mit' and options['head'] == 'logit_mean'
    x = clip()
    load_weights(r50_model, out)
    diff = assert_parity(r50_model, spec, w, x)
    # the trap: the same weights under Paddle's shift direction are silently wrong
    r50_model.set_options(shift_direction='paddle')
    wrong = float(np.abs(ours(r50_model, x) - reference_probs(spec, w, x)).max())
    assert wrong > 100 * max(diff, TOL), (wrong, diff)
    # ... and so is a file that lost its options, under the config's settings
    with open(out, 'rb') as f:
        bare = pickle.load(f)
    del bare[OPTIONS_KEY]
    r50_model.set_options(**CONFIG_OPTIONS)
    load_weights(r50_model, save_pickle(bare, tmp_path / 'bare.pdparams'))
    assert r50_model.options() == CONFIG_OPTIONS
    assert float(np.abs(ours(r50_model, x) - reference_probs(spec, w, x)).max()) > 100 * TOL


def test_modelzoo_converted_and_its_options_restored(tmp_path, r50_model, caplog):
    spec = ModelZoo(50)
    w = random_weights(spec, 400, seed=3)
    src = save_pickle(w, tmp_path / 'TSM.pdparams', protocol=2)  # as the model zoo released it
    out = str(tmp_path / 'mz.pdparams')
    convert_file(save_pickle(w, tmp_path / 'p4.pdparams'), out, 'modelzoo')  # protocol 2 is slow
    x = clip()
    for path in (src, out):
        r50_model.set_options(shift_direction='mit', head='logit_mean', dropout=0.8)
        with caplog.at_level(logging.WARNING, logger='models.weights'):
            load_weights(r50_model, path)
        assert 'shift_direction mit -> paddle' in caplog.text
        assert r50_model.options() == CONFIG_OPTIONS
        assert_parity(r50_model, spec, w, x)


# ---- ResNet-18 cases: placements, shift_div, no shift, mmaction2 ---------------------------

def convert_and_check(tmp_path, spec, w, name, source, num_classes=5, **cfg):
    src = save_pickle({'state_dict': w}, tmp_path / name)
    out = str(tmp_path / (name + '.pdparams'))
    convert_main([src, out, '--from', source])
    model = get_model('TSM', config(num_layers=spec.depth, num_classes=num_classes, **cfg),
                      'infer')
    load_weights(model, out)
    assert_parity(model, spec, w, clip())
    return model, out


def test_mit_block_placement(tmp_path):
    spec = MIT(18, place='block')
    model, _ = convert_and_check(tmp_path, spec, random_weights(spec, 5, seed=4),
                                 'TSM_something_RGB_resnet18_shift8_block_avg_segment8_e45.pkl', 'mit')
    assert model.options()['shift_place'] == 'block'


def test_mit_shift_div_from_the_file_name(tmp_path):
    spec = MIT(18, div=4)
    model, _ = convert_and_check(tmp_path, spec, random_weights(spec, 5, seed=5),
                                 'TSM_kinetics_RGB_resnet18_shift4_blockres_avg_segment8_e50.pkl',
                                 'mit')
    assert model.options()['shift_ratio'] == 0.25


def test_mit_tsn_without_shift_and_shifts_created_from_ratio_zero(tmp_path):
    class TSN(MIT):
        def shifted(self, stage, i):
            return False
    tsn = TSN(18)
    model, _ = convert_and_check(tmp_path, tsn, random_weights(tsn, 5, seed=6), 'tsn.pkl', 'mit')
    assert model.options()['shift_ratio'] == 0.0
    # a config without shift (TSN) loading TSM weights gets its shift layers made
    spec = MIT(18)
    model, _ = convert_and_check(tmp_path, spec, random_weights(spec, 5, seed=7), 'tsm.pkl',
                                 'mit', shift_ratio=0.0)
    assert model.options()['shift_ratio'] == 0.125


def test_mmaction2_resnet18(tmp_path):
    spec = MMAction2(18)
    convert_and_check(tmp_path, spec, random_weights(spec, 5, seed=8), 'mm.pkl', 'mmaction2')


def test_mmaction2_resnet101_shifts_every_second_block(tmp_path):
    """n_round = 2 in mmaction2 (and MIT) for ResNet-101: only even blocks shift."""
    spec = MMAction2(101)
    w = random_weights(spec, 4, seed=9)
    fluid, info = to_fluid(w, 'mmaction2')
    assert info['shift_every'] == 2 and info['num_layers'] == 101
    assert 'res4b22_branch2b_weights' in fluid
    model, _ = convert_and_check(tmp_path, spec, w, 'mm101.pkl', 'mmaction2', num_classes=4)
    assert model.options()['shift_every'] == 2


# ---- errors -------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def mit18():
    spec = MIT(18)
    return spec, random_weights(spec, 5, seed=10)


def test_wrong_source_unknown_keys_and_depth_hint(tmp_path, mit18):
    spec, w = mit18
    src = save_pickle({'state_dict': w}, tmp_path / 'mit.pkl')
    with pytest.raises(ConvertError, match='has mit names, not mmaction2: use --from mit'):
        convert_file(src, str(tmp_path / 'x.pdparams'), 'mmaction2')
    nl = dict(w, **{'module.base_model.layer2.0.nl.g.weight': np.zeros((1,), 'float32')})
    with pytest.raises(ConvertError, match=r"1 key\(s\) are not mit .*layer2\.0\.nl\.g\.weight"):
        to_fluid(nl, 'mit')
    out = str(tmp_path / 'mit18.pdparams')
    convert_file(src, out, 'mit')
    with paddle.LazyGuard(), pytest.raises(WeightsError, match='ResNet-18 TSM, the model is '
                                                             'ResNet-50: set MODEL.num_layers: 18'):
        load_weights(get_model('TSM', config(num_classes=5), 'infer'), out)
    with pytest.raises(WeightsError, match='has 5 classes, the model 400'):
        load_weights(get_model('TSM', config(num_layers=18), 'infer'), out)
    with pytest.raises(SystemExit):
        convert_main([str(tmp_path / 'nope.pth'), out, '--from', 'mit'])


def test_pretrain_from_converted_weights_keeps_the_options_but_not_the_fc(tmp_path, mit18):
    spec, w = mit18
    out = str(tmp_path / 'mit18.pdparams')
    convert_file(save_pickle({'state_dict': w}, tmp_path / 'm.pkl'), out, 'mit')
    model = get_model('TSM', config(num_layers=18, num_classes=3), 'train')
    assert load_pretrain(model, out) == ['fc.weight', 'fc.bias']
    opts = model.options()
    assert (opts['shift_direction'], opts['head'], opts['dropout']) == ('mit', 'logit_mean', 0.5)


# ---- real .pth files (PyTorch needed) -----------------------------------------------------

@pytest.mark.parametrize('kind', ['mit', 'mit-legacy', 'mmaction2'])
def test_pth_files_convert_the_same(tmp_path, kind):
    torch = pytest.importorskip('torch')
    source = kind.split('-')[0]
    spec = MIT(18) if source == 'mit' else MMAction2(18)
    w = random_weights(spec, 5, seed=11)
    tensors = {k: torch.from_numpy(v) for k, v in w.items()}
    pth = tmp_path / f'{kind}.pth'
    if source == 'mit':  # main.py save_checkpoint; MIT's 2019 files predate torch's zip format
        torch.save({'epoch': 50, 'arch': 'resnet18', 'state_dict': tensors, 'best_prec1': 71.2},
                   pth, _use_new_zipfile_serialization=kind != 'mit-legacy')
    else:  # mmengine CheckpointHook
        torch.save({'meta': {'epoch': 50}, 'state_dict': tensors}, pth)
    model = get_model('TSM', config(num_layers=18, num_classes=5), 'infer')
    with pytest.raises(WeightsError, match='PyTorch checkpoint: convert it first'):
        load_weights(model, str(pth))
    out = str(tmp_path / f'{kind}.pdparams')
    convert_main([str(pth), out, '--from', source])
    load_weights(model, out)
    assert_parity(model, spec, w, clip())
