"""The export formulations and Paddle Inference: same numbers as the eager model.

Exact where it is data movement (the shift formulations, tests/test_temporal_shift.py);
within float32 rounding where the shift is folded into the convolution (BN folded too).
"""
import os

import numpy as np
import paddle
import pytest

from testing.models import calibrate_bn
from models.shift_conv import inference_copy
from models.tsm import TSM
from engines.paddle_engine import export, PaddleRunner as InferenceModel, program_files
from inference.artifacts import cache_key
from engines.base import cpu_has_bf16


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def tiny_tsm(depth=18, seg=4, size=32, classes=7, seed=0, **kw):
    paddle.seed(seed)
    model = TSM(num_classes=classes, seg_num=seg, num_layers=depth, **kw)
    return calibrate_bn(model, paddle.randn([2, seg, 3, size, size]))


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


# every direction and placement on the basic block; the bottleneck (50) for both placements
# (the directions only choose which frame each fold reads, the same code at any depth), in
# the static batch only (any batch or a fixed one only changes how frames are addressed,
# the same code at any depth: both run at 18)
@pytest.mark.parametrize('depth,direction,place', [
    (18, 'paddle', 'blockres'), (18, 'mit', 'blockres'), (18, 'backward', 'blockres'),
    (18, 'paddle', 'block'), (50, 'paddle', 'blockres'), (50, 'paddle', 'block')])
def test_export_formulations_equal_eager(depth, direction, place):
    model = tiny_tsm(depth, shift_direction=direction, shift_place=place)
    x = paddle.randn([3, 4, 3, 32, 32])
    with paddle.no_grad():
        want = model(x).numpy()
        for formulation, batch in (('split', None), ('split', 3), ('conv', None), ('conv', 3),
                                   ('slice', None), ('slice', 3)):
            if formulation == 'conv' and place == 'block':
                continue  # exported as split there (test_shift_formulations.py checks it)
            if depth == 50 and batch is None:
                continue
            got = inference_copy(model, formulation, batch)(x).numpy()
            if formulation == 'slice':  # pure data movement: the same numbers
                np.testing.assert_array_equal(got, want)
            else:  # folding BN and splitting the sum: float32 rounding, which the
                # calibrated BN of a 50-layer net amplifies (Paddle Inference's own export
                # of the unshifted network differs from eager by ~6e-5 there)
                assert rel(got, want) < (1e-5 if depth == 18 else 1e-4), (formulation, batch)
        np.testing.assert_array_equal(model(x).numpy(), want)  # the copy left it alone
    assert model.backbone.blocks[1].shift.formulation == 'fused'


def test_split_formulation_with_a_shift_every_other_block_equals_eager():
    model = tiny_tsm(50, shift_every=2)  # MIT's ResNet-101/152 convention
    x = paddle.randn([2, 4, 3, 32, 32])
    with paddle.no_grad():
        want = model(x).numpy()
        got = inference_copy(model, 'split', 2)(x).numpy()
    assert rel(got, want) < 1e-4


def test_conv_formulation_removes_every_blockres_shift():
    net = inference_copy(tiny_tsm(50, shift_every=2), 'conv', 1)
    shifted = [b for b in net.backbone.blocks if b.shift is not None]
    folded = [b for b in net.backbone.blocks if type(b.branch[0]).__name__ == 'ShiftedConvBN']
    assert not shifted and len(folded) == 9  # stages of 3, 4, 6, 3 blocks: every other one


def multiply_adds(net, x):
    """Multiply-adds of every convolution in a forward pass, from weight and output shapes:
    nn.Conv2D layers by hooks, the formulations' F.conv2d calls by a wrapper."""
    import paddle.nn.functional as F
    total, conv2d = [0], F.conv2d

    def count(weight, out):
        total[0] += int(np.prod(out.shape)) * int(np.prod(weight.shape[1:]))

    def counting(inp, weight, *args, **kwargs):
        out = conv2d(inp, weight, *args, **kwargs)
        count(weight, out)
        return out

    hooks = [m.register_forward_post_hook(lambda layer, i, out: count(layer.weight, out))
             for m in net.sublayers() if isinstance(m, paddle.nn.Conv2D)]
    F.conv2d = counting
    try:
        with paddle.no_grad():
            net(x)
    finally:
        F.conv2d = conv2d
        for h in hooks:
            h.remove()
    return total[0]


@pytest.mark.parametrize('depth', [18, 50])
def test_split_formulation_costs_what_the_unshifted_network_costs(depth):
    """The split form moves the folds but adds no multiply-adds (conv adds a quarter of
    each first convolution); the eager TSN is the reference."""
    model = tiny_tsm(depth)
    x = paddle.randn([1, 4, 3, 32, 32])
    tsn = tiny_tsm(depth)
    tsn.backbone.set_shift(0, 'paddle', 'blockres')
    want = multiply_adds(tsn, x)
    assert want > 0
    assert multiply_adds(inference_copy(model, 'split', 1), x) == want
    assert multiply_adds(inference_copy(model, 'conv', 1), x) > want


@pytest.mark.parametrize('formulation,batch', [('split', 1), ('split', None), ('conv', 1),
                                               ('slice', None), ('fused', None)])
def test_paddle_inference_equals_eager(tmp_path, formulation, batch):
    model = tiny_tsm(18, seg=4, size=32)
    x = np.random.default_rng(0).standard_normal((3, 4, 3, 32, 32)).astype('float32')
    with paddle.no_grad():
        want = model(paddle.to_tensor(x)).numpy()
    prefix = export(model, str(tmp_path / 'm' / 'model'), [4, 3, 32, 32], formulation, batch)
    runner = InferenceModel(prefix, batch, threads=1)
    got = runner(paddle.to_tensor(x))  # batch 1: fed clip by clip
    assert isinstance(got, paddle.Tensor) and got.shape == [3, 7]
    assert np.abs(softmax(got.numpy()) - softmax(want)).max() < 1e-5
    assert rel(got.numpy(), want) < 1e-5


def test_paddle_inference_probabilities_equal_eager_softmax(tmp_path):
    """probabilities=True (inference_model.py's export) wraps the formulation's network
    in a softmax, whatever the formulation: one of them here."""
    model = tiny_tsm(18, seg=4, size=32)
    x = np.random.default_rng(0).standard_normal((3, 4, 3, 32, 32)).astype('float32')
    with paddle.no_grad():
        want = softmax(model(paddle.to_tensor(x)).numpy())
    prefix = export(model, str(tmp_path / 'model'), [4, 3, 32, 32], 'split', 1,
                    probabilities=True)
    probs = InferenceModel(prefix, 1).run(x)  # batch 1: fed clip by clip
    assert probs.shape == (3, 7) and np.abs(probs - want).max() < 1e-5


def test_onnx_export_equals_eager(tmp_path):
    """paddle2onnx by hand on the split export (engines/onnx_export.py does the same)."""
    import onnxruntime as ort
    import paddle2onnx
    model = tiny_tsm(18)
    x = np.random.default_rng(1).standard_normal((2, 4, 3, 32, 32)).astype('float32')
    with paddle.no_grad():
        want = softmax(model(paddle.to_tensor(x)).numpy())
    prefix = export(model, str(tmp_path / 'model'), [4, 3, 32, 32], 'split', None,
                    probabilities=True)
    program, params = program_files(prefix)
    paddle2onnx.export(program, params, str(tmp_path / 'model.onnx'), opset_version=13,
                       optimize_tool='onnxoptimizer')
    assert (tmp_path / 'model.onnx').is_file(), 'paddle2onnx could not convert the program'
    sess = ort.InferenceSession(str(tmp_path / 'model.onnx'), providers=['CPUExecutionProvider'])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_array_equal(np.argsort(-got, 1)[:, :5], np.argsort(-want, 1)[:, :5])
    assert np.abs(got - want).max() < 1e-5


def test_cache_key_follows_weights_options_and_size(tmp_path):
    model = tiny_tsm(18)
    w = tmp_path / 'w.pdparams'
    paddle.save(model.state_dict(), str(w))
    cfg = {'seg_num': 4, 'num_layers': 18}
    key = lambda **kw: cache_key(str(w), model, dict(cfg, **kw.get('cfg', {})),  # noqa: E731
                                 kw.get('shape', [4, 3, 32, 32]), 'paddle', 'conv', 1)[0]
    base = key()
    assert key() == base and key(shape=[4, 3, 64, 64]) != base and key(cfg={'x': 1}) != base
    model.set_options(shift_direction='mit')
    assert key() != base
    model.set_options(shift_direction='paddle')
    w.write_bytes(w.read_bytes() + b'\0')
    assert key() != base


@pytest.mark.skipif(not cpu_has_bf16(), reason='this CPU has no bf16 kernels (AVX512-BF16 or AMX)')
@pytest.mark.parametrize('formulation', ['split', 'conv'])
def test_bf16_runs_every_export_formulation(tmp_path, formulation):
    """--precision bf16 on an exported program: oneDNN's bf16 passes accept every op the
    formulation uses (paddle.split did not) and the answer stays that of fp32.  A CPU
    without bf16 runs fp32 instead (the test below), so there is nothing to run here."""
    from inference.artifacts import effective_precision
    assert effective_precision('bf16') == 'bf16'
    model = tiny_tsm(18, seg=4, size=32)
    x = np.random.default_rng(2).standard_normal((2, 4, 3, 32, 32)).astype('float32')
    prefix = export(model, str(tmp_path / 'model'), [4, 3, 32, 32], formulation, 1)
    fp32 = InferenceModel(prefix, 1).run(x)
    bf16 = InferenceModel(prefix, 1, precision='bf16').run(x)
    assert bf16.shape == fp32.shape and np.isfinite(bf16).all()
    assert 0 < rel(bf16, fp32) < 0.1  # bf16 ran (not fp32 again) and keeps 8 bits of mantissa
    np.testing.assert_array_equal(bf16.argmax(1), fp32.argmax(1))


def test_bf16_falls_back_to_fp32_where_the_cpu_lacks_it(monkeypatch):
    import engines.base as base
    monkeypatch.setattr(base, 'cpu_has_bf16', lambda: False)
    assert base.effective_precision('bf16') == 'fp32'
    assert base.effective_precision('fp32') == 'fp32'
    assert base.default_precision() == 'fp32'
    monkeypatch.setattr(base, 'cpu_has_bf16', lambda: True)
    assert base.effective_precision('bf16') == 'bf16' and base.default_precision() == 'bf16'


FAULTS = r'''
import resource, sys
import numpy as np, paddle
from engines.paddle_engine import create_predictor, program_files
prefix, ours = sys.argv[1], sys.argv[2] == 'ours'
if ours:
    predictor = create_predictor(prefix)
else:  # Paddle Inference as it comes
    config = paddle.inference.Config(*program_files(prefix))
    config.enable_mkldnn()
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
inp = predictor.get_input_handle(predictor.get_input_names()[0])
x = np.ones([8, 3, 224, 224], np.float32)
faults = []
for _ in range(6):
    inp.reshape(list(x.shape))
    inp.copy_from_cpu(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    predictor.run()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[3:]))  # the heap settles within a few runs
'''


def test_predictor_reuses_the_memory_a_run_frees(tmp_path):
    """Activations of ~25 MB (a ResNet stem's at 8 x 224 x 224): as Paddle 3 Inference
    comes, every run faults their pages in again; with create_predictor's allocator
    settings (utils.env.keep_freed_memory) a run after warm-up faults (almost) none."""
    import subprocess
    import sys

    class Stem(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.a = paddle.nn.Conv2D(3, 64, 7, stride=2, padding=3)
            self.b = paddle.nn.Conv2D(64, 64, 3, padding=1)

        def forward(self, x):
            return self.b(paddle.nn.functional.relu(self.a(x))).mean(axis=[2, 3])

    net = Stem()
    net.eval()
    prefix = str(tmp_path / 'stem')
    paddle.jit.save(net, prefix, input_spec=[paddle.static.InputSpec([8, 3, 224, 224])])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    faults = {}
    for mode in ('plain', 'ours'):
        res = subprocess.run([sys.executable, '-c', FAULTS, prefix, mode], cwd=root,
                             capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert res.returncode == 0, res.stderr[-2000:]
        faults[mode] = int(res.stdout.split()[-1])
    # one 25 MB tensor is 6272 pages; Paddle 3.3 as it comes faults 12546 per run (Paddle
    # 2.6's allocator keeps them itself: 0)
    assert faults['ours'] < 100 and faults['ours'] <= faults['plain'], faults
