"""Model: registry, shapes, parameter count, gradients, and the released-weights path
checked against an independent functional re-implementation of the model-zoo network."""
import pickle

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from models import get_model, known_models, load_pretrain, load_weights, register
from models.registry import lookup
from models.tsm import TSM
from models.weight_files import WeightsError
from tests.test_temporal_shift import numpy_shift
from utils.config_utils import parse_config
from models.lod_tensor import write_lod_tensor


def cfg_with(**model):
    cfg = parse_config('configs/tsm.yaml')
    cfg.MODEL.update(model)
    return cfg


def test_registry_is_case_insensitive_and_lists_known_names():
    assert lookup('tsm') is lookup('TSM') is TSM
    assert 'TSM' in known_models()
    with pytest.raises(KeyError, match='known: .*TSM'):
        get_model('NoSuchNet', cfg_with())
    with pytest.raises(KeyError, match='twice'):
        register('tsm')(type('Other', (), {}))


def test_resnet50_has_the_published_parameter_count():
    model = get_model('TSM', cfg_with(), 'infer')
    n = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert abs(n / 1e6 - 24.3) < 0.1, n  # 23.5 M backbone + 0.82 M FC
    fc = sum(int(np.prod(p.shape)) for p in model.fc.parameters())
    assert fc == 2048 * 400 + 400


@pytest.mark.parametrize('layers,seglen', [(18, 1), (34, 1), (50, 2)])
def test_output_shape_and_mode(layers, seglen):
    model = get_model('TSM', cfg_with(num_layers=layers, num_classes=7, seg_num=3,
                                      seglen=seglen), 'valid')
    assert not model.training
    out = model(paddle.randn([2, 3, 3 * seglen, 32, 32]))
    assert out.shape == [2, 7] and np.isfinite(out.numpy()).all()
    assert get_model('TSM', cfg_with(num_layers=18), 'train').training


def test_every_parameter_gets_a_gradient():
    model = get_model('TSM', cfg_with(num_layers=18, num_classes=5, seg_num=4), 'train')
    loss = F.cross_entropy(model(paddle.randn([2, 4, 3, 32, 32])), paddle.to_tensor([[1], [3]]))
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if not p.stop_gradient]
    assert len(trainable) == 62  # 20 ConvBN x 3 (conv, BN scale, offset) + FC weight, bias
    for name, p in trainable:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_fc_bias_has_double_lr_and_no_decay():
    model = get_model('TSM', cfg_with(num_layers=18), 'train')
    assert model.fc.bias.optimize_attr['learning_rate'] == 2.0
    assert float(model.fc.bias.regularizer._coeff) == 0.0
    assert model.fc.weight.regularizer is None  # falls back to the optimizer's L2


def test_fluid_names_follow_the_model_zoo():
    names = set(get_model('TSM', cfg_with(num_layers=101), 'infer').fluid_names().values())
    for expected in ('conv1_weights', 'bn_conv1_scale', 'bn_conv1_variance',
                     'res2a_branch1_weights', 'bn2a_branch1_mean', 'res2c_branch2c_weights',
                     'res4a_branch2a_weights', 'res4b22_branch2b_weights',
                     'bn4b22_branch2b_offset', 'res5c_branch2c_weights', 'fc_0.w_0', 'fc_0.b_0'):
        assert expected in names, expected
    assert 'res4w_branch2a_weights' not in names


# ---- an independent model-zoo network: fluid names, functional ops, numpy shift ----

def block_names(counts, depth):
    for stage, count in enumerate(counts):
        for i in range(count):
            if depth in (101, 152) and stage == 2:
                yield stage, i, f"res4{'a' if i == 0 else 'b%d' % i}"
            else:
                yield stage, i, f"res{stage + 2}{chr(97 + i)}"


def reference_forward(w, x, seg_num, depth=50):
    """The model zoo's TSM (PaddleCV/video/models/tsm/tsm_res_model.py) at inference."""
    counts = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]

    def conv_bn(x, name, stride=1, act=True):
        k = w[name + '_weights'].shape[-1]
        y = F.conv2d(x, paddle.to_tensor(w[name + '_weights']), stride=stride, padding=(k - 1) // 2)
        bn = 'bn_' + name if name == 'conv1' else 'bn' + name[3:]
        y = F.batch_norm(y, paddle.to_tensor(w[bn + '_mean']), paddle.to_tensor(w[bn + '_variance']),
                         paddle.to_tensor(w[bn + '_scale']), paddle.to_tensor(w[bn + '_offset']),
                         training=False, epsilon=1e-5)
        return F.relu(y) if act else y

    n, t = x.shape[:2]
    h = paddle.to_tensor(x.reshape(n * t, *x.shape[2:]))
    h = F.max_pool2d(conv_bn(h, 'conv1', 2), 3, 2, 1)
    for stage, i, name in block_names(counts, depth):
        stride = 2 if i == 0 and stage > 0 else 1
        shifted = paddle.to_tensor(numpy_shift(h.numpy(), seg_num, 1 / 8, 'paddle'))
        y = conv_bn(shifted, name + '_branch2a')
        y = conv_bn(y, name + '_branch2b', stride)
        y = conv_bn(y, name + '_branch2c', act=False)
        short = conv_bn(h, name + '_branch1', stride, act=False) if i == 0 else h
        h = F.relu(short + y)
    feat = h.numpy().mean(axis=(2, 3)) * 0.5  # fluid dropout at inference: x * (1 - p)
    feat = feat.reshape(n, t, -1).mean(axis=1)
    logits = feat @ w['fc_0.w_0'] + w['fc_0.b_0']
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def random_fluid_weights(model, seed=0):
    """Seeded random arrays under the model zoo's names (BN stats kept sane)."""
    rng = np.random.default_rng(seed)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    out = {}
    for ours, fluid in model.fluid_names().items():
        shape = shapes[ours]
        if fluid.endswith('_variance'):
            out[fluid] = rng.uniform(0.5, 1.5, shape).astype('float32')
        elif fluid.endswith(('_scale',)):
            out[fluid] = rng.uniform(0.5, 1.0, shape).astype('float32')
        elif fluid.endswith(('_offset', '_mean')):
            out[fluid] = rng.normal(0, 0.1, shape).astype('float32')
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
            out[fluid] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype('float32')
    return out


@pytest.fixture(scope='module')
def released(tmp_path_factory):
    """A file in the released TSM.pdparams format: pickled dict of fluid names, protocol 2."""
    cfg = cfg_with(num_classes=10)
    weights = random_fluid_weights(get_model('TSM', cfg, 'infer'))
    path = tmp_path_factory.mktemp('released') / 'TSM.pdparams'
    with open(path, 'wb') as f:
        pickle.dump(weights, f, protocol=2)
    return cfg, weights, str(path)


def test_released_weights_give_the_original_networks_outputs(released):
    cfg, weights, path = released
    model = get_model('TSM', cfg, 'infer')
    load_weights(model, path)
    x = np.random.default_rng(3).standard_normal((2, 8, 3, 64, 64)).astype('float32')
    ours = F.softmax(model(paddle.to_tensor(x)), axis=-1).numpy()
    ref = reference_forward(weights, x, seg_num=8)
    assert np.abs(ours - ref).max() < 1e-5
    assert ours.argmax(1).tolist() == ref.argmax(1).tolist()


def test_imagenet_directory_loads_without_fc(tmp_path, released):
    cfg, weights, _ = released
    folder = tmp_path / 'ResNet50_pretrained'
    folder.mkdir()
    for name, arr in weights.items():
        write_lod_tensor(str(folder / name), arr if 'fc_0' not in name else arr[..., :3])
    model = get_model('TSM', cfg, 'train')
    fc_before = model.fc.weight.numpy().copy()
    skipped = load_pretrain(model, str(folder))
    assert skipped == ['fc.weight', 'fc.bias']
    np.testing.assert_array_equal(model.fc.weight.numpy(), fc_before)
    np.testing.assert_array_equal(model.backbone.stem.conv.weight.numpy(), weights['conv1_weights'])
    with pytest.raises(WeightsError, match='missing 2: fc.bias, fc.weight'):
        load_weights(model, str(folder))  # a full load insists on the FC


def test_strict_loading_lists_every_problem(tmp_path, released):
    cfg, weights, _ = released
    bad = dict(weights)
    del bad['res2a_branch2a_weights']
    bad['extra_thing'] = np.zeros(3, 'float32')
    bad['fc_0.w_0'] = np.zeros((2048, 11), 'float32')
    path = tmp_path / 'bad.pdparams'
    with open(path, 'wb') as f:
        pickle.dump(bad, f, protocol=2)
    with pytest.raises(WeightsError) as err:
        load_weights(get_model('TSM', cfg, 'infer'), str(path))
    msg = str(err.value)
    assert 'missing 1: backbone.blocks.0.branch.0.conv.weight' in msg
    assert 'unexpected 1: extra_thing' in msg
    assert 'fc.weight (2048, 11) vs model (2048, 10)' in msg
    assert '\n' not in msg


def test_own_checkpoint_round_trip_and_wrong_architecture(tmp_path):
    m18 = get_model('TSM', cfg_with(num_layers=18, num_classes=4), 'infer')
    paddle.save(m18.state_dict(), str(tmp_path / 'm.pdparams'))
    other = get_model('TSM', cfg_with(num_layers=18, num_classes=4), 'infer')
    load_weights(other, str(tmp_path / 'm'))  # the prefix works too
    x = paddle.randn([1, 8, 3, 32, 32])
    np.testing.assert_array_equal(m18(x).numpy(), other(x).numpy())
    with pytest.raises(WeightsError, match='do not fit'):
        load_weights(get_model('TSM', cfg_with(num_layers=34, num_classes=4), 'infer'),
                     str(tmp_path / 'm.pdparams'))
    (tmp_path / 'corrupt.pdparams').write_bytes(b'\x80\x02garbage')
    with pytest.raises(WeightsError, match='corrupt.pdparams'):
        load_weights(other, str(tmp_path / 'corrupt.pdparams'))
    with pytest.raises(WeightsError, match='not found'):
        load_weights(other, str(tmp_path / 'nope.pdparams'))
