"""MobileNetV2-TSM: the shift where MIT puts it, MIT's checkpoints give MIT's outputs here.

The PyTorch reference below is written again from MIT temporal-shift-module's published
code (archs/mobilenet_v2.py, ops/temporal_shift.py, ops/models.py for the offline TSN;
online_demo/mobilenet_v2_tsm.py for the online demo's shift buffers), not from this
project's classes.  It is filled with seeded random weights under MIT's key layouts,
saved as a real .pth, converted by tools/convert_weights.py and loaded into the model the
shipped configs build; both see the same input.  Inputs are 64 px, batch 1, so every test
takes seconds.
"""
import logging

import numpy as np
import paddle
import pytest
import torch
import torch.nn as tnn

from models import get_model, load_weights
from models.weight_files import ConvertError
from models.online import OnlineTSM, StepShift
from models.shift_conv import inference_copy
from models.temporal_shift import TemporalShift, find_shifts
from models.weight_files import OPTIONS_KEY, WeightsError
from tools.convert_weights import convert_file
from tools.convert_weights import main as convert_main
from utils.config_utils import ConfigError, apply_overrides, parse_config
from utils.safe_pickle import safe_load

SIZE, SEGMENTS = 64, 8
# MIT's table: expansion t, channels c, blocks n, first stride s
SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1)]
# online_demo/mobilenet_v2_tsm.py `shift_block_idx`: the blocks with a residual connection
DEMO_SHIFT_BLOCKS = [2, 4, 5, 7, 8, 9, 11, 12, 14, 15]

torch.set_num_threads(1)


# ---- the PyTorch reference (MIT's code, re-written) ---------------------------------------

def mit_shift(x, n_segment, fold_div=8):
    """ops/temporal_shift.py TemporalShift.shift: the first fold from t+1, the second from
    t-1, zero at the ends."""
    nt, c, h, w = x.size()
    x = x.view(nt // n_segment, n_segment, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.view(nt, c, h, w)


class MitTemporalShift(tnn.Module):
    """Wraps a conv as MIT does (`net`), so the key reads `conv.0.net.weight`."""

    def __init__(self, net, n_segment):
        super().__init__()
        self.net, self.n_segment = net, n_segment

    def forward(self, x):
        return self.net(mit_shift(x, self.n_segment))


def conv_bn(inp, oup, kernel, stride, groups=1, relu=True):
    layers = [tnn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False),
              tnn.BatchNorm2d(oup)]
    return layers + [tnn.ReLU6()] if relu else layers


class RefInvertedResidual(tnn.Module):
    def __init__(self, inp, oup, stride, t):
        super().__init__()
        hidden = inp * t
        self.use_res_connect = stride == 1 and inp == oup
        layers = conv_bn(inp, hidden, 1, 1) if t != 1 else []
        layers += conv_bn(hidden, hidden, 3, stride, groups=hidden)
        layers += conv_bn(hidden, oup, 1, 1, relu=False)
        self.conv = tnn.Sequential(*layers)

    def forward(self, x, buffer=None):
        if buffer is None:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)
        # online_demo InvertedResidualWithShift: the first c//8 channels from the buffer
        c = x.size(1)
        return x + self.conv(torch.cat((buffer, x[:, c // 8:]), dim=1)), x[:, :c // 8]


class RefMobileNetV2(tnn.Module):
    """archs/mobilenet_v2.py with width 1.0: features.0 stem, 1..17 blocks, 18 last conv."""

    def __init__(self, n_class):
        super().__init__()
        features, inp = [tnn.Sequential(*conv_bn(3, 32, 3, 2))], 32
        for t, c, n, s in SETTING:
            for i in range(n):
                features.append(RefInvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(tnn.Sequential(*conv_bn(inp, 1280, 1, 1)))
        self.features = tnn.Sequential(*features)
        self.classifier = tnn.Linear(1280, n_class)

    def shifted(self):
        return [i - 1 for i, m in enumerate(self.features)
                if isinstance(m, RefInvertedResidual) and len(m.conv) == 8 and m.use_res_connect]

    def pooled(self, x):
        return self.features(x).mean(3).mean(2)


class RefTSN(tnn.Module):
    """ops/models.py TSN with base_model mobilenetv2, is_shift, blockres: conv[0] of each
    residual block wrapped by TemporalShift; classifier -> Dropout, new_fc, average."""

    def __init__(self, n_class, n_segment):
        super().__init__()
        self.base_model = RefMobileNetV2(1000)
        for m in self.base_model.features:
            if isinstance(m, RefInvertedResidual) and len(m.conv) == 8 and m.use_res_connect:
                m.conv[0] = MitTemporalShift(m.conv[0], n_segment)
        self.base_model.classifier = tnn.Dropout(0.5)
        self.new_fc = tnn.Linear(1280, n_class)
        self.n_segment = n_segment

    def forward(self, x):  # [N, T*3, H, W] as MIT feeds it
        x = x.view(-1, 3, x.size(-2), x.size(-1))
        logits = self.new_fc(self.base_model.classifier(self.base_model.pooled(x)))
        return logits.view(-1, self.n_segment, logits.size(-1)).mean(1)


def online_demo_step(net, frame, buffers):
    """online_demo MobileNetV2.forward: one frame, the shift buffers in and out."""
    x, out, k = frame, [], 0
    for f in net.features:
        if isinstance(f, RefInvertedResidual) and len(f.conv) == 8 and f.use_res_connect:
            x, s = f(x, buffers[k])
            out.append(s)
            k += 1
        else:
            x = f(x)
    return net.classifier(x.mean(3).mean(2)), out


def randomise(module, seed):
    """Seeded random weights, BN statistics included (else BN is near the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                if name.endswith('running_var'):
                    t.copy_(0.5 + torch.rand(t.shape, generator=g))
                elif name.endswith(('bn.weight',)) or (name.endswith('weight') and t.dim() == 1):
                    t.copy_(0.8 + 0.4 * torch.rand(t.shape, generator=g))
                else:
                    fan = max(1, t[0].numel()) if t.dim() > 1 else 1
                    t.copy_(torch.randn(t.shape, generator=g) * (1.0 / fan) ** 0.5)
    return module.eval()


def clip(seed=0, frames=SEGMENTS):
    return np.random.default_rng(seed).standard_normal((1, frames, 3, SIZE, SIZE)).astype('float32')


# ---- MIT checkpoints written and converted --------------------------------------------------

@pytest.fixture(scope='module')
def kinetics(tmp_path_factory):
    """MIT's Kinetics TSM layout: {'state_dict': {'module.base_model.features...'}}."""
    net = randomise(RefTSN(400, SEGMENTS), 1)
    d = tmp_path_factory.mktemp('mit')
    src = d / 'TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth'
    torch.save({'epoch': 100, 'arch': 'mobilenetv2', 'best_prec1': 0.0,
                'state_dict': {'module.' + k: v for k, v in net.state_dict().items()}}, src)
    dst = d / 'mbv2_kinetics.pdparams'
    convert_file(str(src), str(dst), 'mit')
    return net, src, dst


@pytest.fixture(scope='module')
def jester(tmp_path_factory):
    """The online demo's layout: a bare state_dict, `features...`, `classifier` (27)."""
    net = randomise(RefMobileNetV2(27), 2)
    d = tmp_path_factory.mktemp('jester')
    src = d / 'mobilenetv2_jester_online.pth.tar'
    torch.save(net.state_dict(), src)
    dst = d / 'mbv2_jester.pdparams'
    convert_main([str(src), str(dst), '--from', 'mit_online'])
    return net, src, dst


def built(config, weights, **model):
    cfg = parse_config(config)
    cfg.MODEL.update(model)
    net = get_model('TSM', cfg, 'infer')
    load_weights(net, str(weights))
    return net


def test_reference_shifts_the_demo_blocks():
    # the two MIT files agree on which blocks shift: the reference is MIT's layout
    assert RefMobileNetV2(2).shifted() == DEMO_SHIFT_BLOCKS


def test_kinetics_checkpoint_matches_reference(kinetics):
    ref, _, dst = kinetics
    x = clip(3)
    with torch.no_grad():
        want = ref(torch.from_numpy(x.reshape(1, -1, SIZE, SIZE))).numpy()
    net = built('configs/tsm_mobilenetv2.yaml', dst)
    got = net(paddle.to_tensor(x)).numpy()
    assert np.abs(want).max() > 1e-2  # the outputs carry signal
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert got.argmax() == want.argmax()


def test_kinetics_options_and_keys(kinetics):
    _, _, dst = kinetics
    state = safe_load(str(dst))
    options = state.pop(OPTIONS_KEY)
    assert options['backbone'] == 'mobilenetv2' and options['num_classes'] == 400
    assert options['shift_direction'] == 'mit' and options['shift_ratio'] == 0.125
    assert options['shift_place'] == 'blockres' and options['head'] == 'logit_mean'
    assert state['fc.weight'].shape == (1280, 400)  # torch [out, in] transposed
    assert state['backbone.blocks.2.expand.conv.weight'].shape == (144, 24, 1, 1)


def test_jester_online_matches_demo_step_by_step(jester):
    """The online demo's per-frame logits with its shift buffers, frame after frame."""
    ref, _, dst = jester
    net = built('configs/tsm_mobilenetv2_jester_online.yaml', dst)
    online = OnlineTSM(net, window=1)  # window 1: the current frame's logits
    frames = clip(4, frames=5)[0]
    sizes = _fold_sizes(ref, frames[0])
    buffers = [torch.zeros(s) for s in sizes]  # the demo starts from zero buffers
    for frame in frames:
        with torch.no_grad():
            want, buffers = online_demo_step(ref, torch.from_numpy(frame[None]), buffers)
        got = online.step(paddle.to_tensor(frame[None]))  # numpy [1, K]
        want = want.detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert [list(s.shape) for s in online.states] == [list(s) for s in sizes]


def _fold_sizes(ref, frame):
    """The demo's buffer shapes for one frame: [1, C//8, h, w] at each shifted block."""
    sizes, x = [], torch.from_numpy(frame[None])
    with torch.no_grad():
        for f in ref.features:
            if isinstance(f, RefInvertedResidual) and len(f.conv) == 8 and f.use_res_connect:
                sizes.append([1, x.size(1) // 8, x.size(2), x.size(3)])
            x = f(x)
    return sizes


def test_jester_offline_is_the_causal_online(jester):
    """Offline backward-shift TSM over frames 0..t = the online model at t (window 0)."""
    _, _, dst = jester
    net = built('configs/tsm_mobilenetv2_jester_online.yaml', dst, seg_num=4)
    x = clip(5, frames=4)
    offline = net(paddle.to_tensor(x)).numpy()
    online = OnlineTSM(built('configs/tsm_mobilenetv2_jester_online.yaml', dst, seg_num=4))
    for frame in x[0]:
        got = online.step(paddle.to_tensor(frame[None]))  # numpy [1, K]
    np.testing.assert_allclose(got, offline, rtol=1e-4, atol=1e-5)
    options = safe_load(str(dst))[OPTIONS_KEY]
    assert options['shift_direction'] == 'backward' and options['num_classes'] == 27


def test_jester_labels_are_the_demo_order():
    with open('data/jester_label_list.txt', encoding='utf-8') as f:
        names = [ln.strip() for ln in f if ln.strip()]
    assert len(names) == 27
    assert names[0] == 'Doing other things' and names[2] == 'No gesture'
    assert names[-1] == 'Zooming Out With Two Fingers'
    assert parse_config('configs/tsm_mobilenetv2_jester_online.yaml').INFER.kinetics_labels \
        == './data/jester_label_list.txt'


# ---- the shift placement, against a numpy oracle ---------------------------------------------

def numpy_shift(x, t, direction, div=8):
    """[N*T, C, H, W]: 'mit' first fold from t+1, second from t-1; 'paddle' the opposite;
    'backward' the first fold from t-1 only.  Zero where there is no source frame."""
    nt, c = x.shape[:2]
    v, out = x.reshape(nt // t, t, c, *x.shape[2:]), x.reshape(nt // t, t, c, *x.shape[2:]).copy()
    fold = c // div
    folds = {'mit': [(0, -1), (1, +1)], 'paddle': [(0, +1), (1, -1)], 'backward': [(0, +1)]}
    for k, step in folds[direction]:
        sl = slice(k * fold, (k + 1) * fold)
        out[:, :, sl] = 0
        if step > 0:  # from the previous frame
            out[:, 1:, sl] = v[:, :-1, sl]
        else:
            out[:, :-1, sl] = v[:, 1:, sl]
    return out.reshape(x.shape)


def expected_shifted_blocks():
    """From MIT's table: blocks with an expansion conv, stride 1 and in == out channels."""
    out, inp, k = [], 32, 0
    for t, c, n, s in SETTING:
        for i in range(n):
            if t != 1 and (s if i == 0 else 1) == 1 and inp == c:
                out.append(k)
            inp, k = c, k + 1
    return out


@pytest.mark.parametrize('direction', ['mit', 'paddle', 'backward'])
def test_shift_sits_on_the_expand_input_of_residual_blocks(direction):
    cfg = parse_config('configs/tsm_mobilenetv2.yaml')
    cfg.MODEL.update(seg_num=4, shift_direction=direction, num_classes=5)
    net = get_model('TSM', cfg, 'infer')
    seen = {}
    hooks = []
    for i, block in enumerate(net.backbone.blocks):
        hooks.append(block.register_forward_pre_hook(
            lambda layer, inp, i=i: seen.setdefault(i, {}).update(x=inp[0].numpy())))
        hooks.append(block.register_forward_post_hook(
            lambda layer, inp, out, i=i: seen[i].update(out=out.numpy())))
        hooks.append(block.project.register_forward_post_hook(
            lambda layer, inp, out, i=i: seen[i].update(branch=out.numpy())))
        first = block.expand if block.expand is not None else block.depthwise
        hooks.append(first.register_forward_pre_hook(
            lambda layer, inp, i=i: seen[i].update(first=inp[0].numpy())))
    net(paddle.to_tensor(clip(6, frames=4)[:, :, :, :32, :32]))
    for h in hooks:
        h.remove()
    shifted = expected_shifted_blocks()
    assert shifted == DEMO_SHIFT_BLOCKS
    for i, s in seen.items():
        want = numpy_shift(s['x'], 4, direction) if i in shifted else s['x']
        np.testing.assert_array_equal(s['first'], want, err_msg=f"block {i}")
        if i in shifted:  # the shortcut adds the unshifted input (blockres)
            np.testing.assert_allclose(s['out'] - s['branch'], s['x'], atol=1e-5)
    layers = [name for _, name, _ in find_shifts(net.backbone)]
    assert len(layers) == len(shifted) and set(layers) == {'shift'}


def test_online_tsm_replaces_every_mobilenet_shift():
    cfg = parse_config('configs/tsm_mobilenetv2_jester_online.yaml')
    net = get_model('TSM', cfg, 'infer')
    online = OnlineTSM(net, window=2)
    assert find_shifts(net.backbone) == []  # no offline shift left
    steps = [s for _, _, s in find_shifts(net.backbone, StepShift)]
    assert [s.index for s in steps] == list(range(len(DEMO_SHIFT_BLOCKS)))
    online.step(paddle.to_tensor(clip(7, frames=1)[0]))
    assert [s.shape[1] for s in online.states] == [3, 4, 4, 8, 8, 8, 12, 12, 20, 20]


# ---- conversion errors, config, training, export ------------------------------------------

def test_converted_mobilenet_into_a_resnet_config_names_the_key(jester):
    _, _, dst = jester
    with pytest.raises(WeightsError, match=r"MODEL\.backbone: mobilenetv2"):
        built('configs/tsm.yaml', dst, num_classes=27)


def test_unknown_key_and_wrong_shift_pattern_are_one_line_errors(tmp_path):
    net = RefMobileNetV2(3)
    state = dict(net.state_dict(), **{'features.5.conv.2.weight': torch.zeros(1)})
    torch.save(state, tmp_path / 'extra.pth')
    with pytest.raises(ConvertError, match=r"features\.5\.conv\.2\.weight") as e:
        convert_file(str(tmp_path / 'extra.pth'), str(tmp_path / 'o.pdparams'), 'mit_online')
    assert '\n' not in str(e.value)
    tsn = RefTSN(3, SEGMENTS)
    tsn.base_model.features[3].conv[0] = tsn.base_model.features[3].conv[0].net  # unshift one
    torch.save({'module.' + k: v for k, v in tsn.state_dict().items()}, tmp_path / 'odd.pth')
    with pytest.raises(ConvertError, match='shifted blocks'):
        convert_file(str(tmp_path / 'odd.pth'), str(tmp_path / 'o.pdparams'), 'mit')
    with pytest.raises(ConvertError, match='use --from mit_online'):
        convert_file(str(tmp_path / 'extra.pth'), str(tmp_path / 'o.pdparams'), 'mit')
    assert not (tmp_path / 'o.pdparams').exists()


def test_backbone_key_is_validated(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text("MODEL:\n    backbone: vgg16\n")
    with pytest.raises(ConfigError, match=r"'MODEL\.backbone' must be one of") as e:
        parse_config(str(bad))
    assert '\n' not in str(e.value)
    with pytest.raises(ConfigError, match=r"MODEL\.backbone"):
        apply_overrides(parse_config('configs/tsm.yaml'), ['MODEL.backbone=mobilenet'])
    assert parse_config('configs/tsm.yaml').MODEL.backbone == 'resnet'  # the default


def test_tiny_train_step_reaches_every_parameter():
    cfg = apply_overrides(parse_config('configs/tsm_mobilenetv2.yaml'),
                          ['MODEL.seg_num=2', 'MODEL.num_classes=4', 'MODEL.shift_direction=backward'])
    paddle.seed(0)
    net = get_model('TSM', cfg, 'train')
    opt = paddle.optimizer.Momentum(0.01, parameters=net.parameters())
    x = paddle.to_tensor(clip(8, frames=4).reshape(2, 2, 3, SIZE, SIZE)[..., :32, :32])
    loss = paddle.nn.functional.cross_entropy(net(x), paddle.to_tensor([[1], [3]]))
    loss.backward()
    assert np.isfinite(float(loss))
    missing = [n for n, p in net.named_parameters() if not p.stop_gradient and
               (p.grad is None or not np.any(p.grad.numpy()))]
    assert missing == []
    before = net.fc.weight.numpy().copy()
    opt.step()
    assert not np.array_equal(before, net.fc.weight.numpy())


@pytest.mark.parametrize('formulation', ['slice', 'conv', 'split'])
def test_export_formulations_equal_eager(formulation, kinetics):
    _, _, dst = kinetics
    net = built('configs/tsm_mobilenetv2.yaml', dst, seg_num=4)
    x = paddle.to_tensor(clip(9, frames=4))
    want = net(x).numpy()
    got = inference_copy(net, formulation, batch=1)(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the conv formulation folds each shift into the expand conv: no shift layer is left
    left = find_shifts(inference_copy(net, formulation, batch=1).backbone, TemporalShift)
    assert (len(left) == 0) == (formulation != 'slice')


def test_training_without_pretrain_warns(caplog):
    from training.resume import _pretrain
    cfg = parse_config('configs/tsm_mobilenetv2.yaml')
    net = get_model('TSM', cfg, 'train')
    with caplog.at_level(logging.WARNING):
        _pretrain(net, None)
    assert any('no ImageNet mobilenetv2 weights' in r.getMessage() for r in caplog.records)


def test_demo_flags_build_an_online_mobilenet():
    """tools/demo.py --backbone mobilenetv2 --online: the -o flags it passes to every step
    give a MobileNetV2 TSM with the backward shift, which online mode accepts."""
    from tools.demo import parse_args, variant_overrides
    o = variant_overrides(parse_args(['--backbone', 'mobilenetv2', '--online']))
    assert o == ['MODEL.backbone=mobilenetv2', 'MODEL.shift_direction=backward']
    assert variant_overrides(parse_args([])) == []
    cfg = apply_overrides(parse_config('configs/tsm_demo.yaml'), o)
    net = get_model('TSM', cfg, 'infer')
    assert type(net.backbone).__name__ == 'MobileNetV2TSM'
    assert {s.direction for _, _, s in find_shifts(net.backbone)} == {'backward'}
    online = OnlineTSM(net, window=cfg.MODEL.seg_num)
    logits = online.step(paddle.to_tensor(clip(10, frames=1)[0, :, :, :32, :32]))
    assert logits.shape == (1, 8)  # numpy
