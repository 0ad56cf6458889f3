"""The shift against a numpy oracle written from the paper's definition."""
import numpy as np
import paddle
import pytest

from models.temporal_shift import TemporalShift, temporal_shift


def numpy_shift(x, seg_num, ratio, direction):
    """[N*T, C, H, W]: fold A = channels [0, int(C*r)), fold B = [int(C*r), int(2*C*r)).
    paddle: A at t takes t-1, B takes t+1.  mit: A takes t+1, B takes t-1.  Zero-filled."""
    nt, c = x.shape[:2]
    v = x.reshape(nt // seg_num, seg_num, c, *x.shape[2:])
    out = v.copy()
    a, b = int(c * ratio), int(c * 2 * ratio)
    prev_fold, next_fold = (slice(0, a), slice(a, b)) if direction == 'paddle' else (
        slice(a, b), slice(0, a))
    for t in range(seg_num):
        out[:, t, prev_fold] = v[:, t - 1, prev_fold] if t > 0 else 0
        out[:, t, next_fold] = v[:, t + 1, next_fold] if t < seg_num - 1 else 0
    return out.reshape(x.shape)


@pytest.mark.parametrize('direction', ['paddle', 'mit'])
@pytest.mark.parametrize('seg_num,channels,ratio', [(8, 16, 0.125), (4, 64, 0.125),
                                                    (3, 10, 0.25), (8, 24, 1 / 16)])
def test_shift_matches_numpy(direction, seg_num, channels, ratio):
    x = np.random.default_rng(1).standard_normal((2 * seg_num, channels, 3, 5)).astype('float32')
    got = temporal_shift(paddle.to_tensor(x), seg_num, ratio, direction).numpy()
    np.testing.assert_array_equal(got, numpy_shift(x, seg_num, ratio, direction))


def test_fused_op_is_the_paddle_direction():
    """The reference fact: Paddle's op fills fold 0 of frame t from frame t-1."""
    x = np.arange(2 * 8, dtype='float32').reshape(2, 8, 1, 1) * np.ones((1, 1, 2, 2), 'float32')
    y = paddle.nn.functional.temporal_shift(paddle.to_tensor(x), 2, 0.125).numpy()
    assert y[1, 0, 0, 0] == x[0, 0, 0, 0]  # fold 0 (channel 0) from t-1
    assert y[0, 1, 0, 0] == x[1, 1, 0, 0]  # fold 1 (channel 1) from t+1
    assert y[0, 0, 0, 0] == 0 and y[1, 1, 0, 0] == 0  # zero-filled ends
    np.testing.assert_array_equal(y[:, 2:], x[:, 2:])  # the rest untouched


def test_directions_differ_and_zero_ratio_is_identity():
    x = paddle.randn([8, 16, 2, 2])
    a = temporal_shift(x, 4, 0.125, 'paddle').numpy()
    b = temporal_shift(x, 4, 0.125, 'mit').numpy()
    assert np.abs(a - b).max() > 0.1
    np.testing.assert_array_equal(temporal_shift(x, 4, 0, 'paddle').numpy(), x.numpy())


@pytest.mark.parametrize('direction', ['paddle', 'mit'])
@pytest.mark.parametrize('formulation,batch', [('fused', None), ('slice', None), ('slice', 2)])
def test_gradient_flows_through_both_formulations(direction, formulation, batch, monkeypatch):
    """The gradient of each formulation is the adjoint shift: a fold that takes frame t-1
    sends its gradient to t-1, so d/dx of sum(shift(x) * w) is w shifted the opposite way
    (the other direction); the fused op runs only where it is asked for."""
    import models.temporal_shift as ts
    calls = []
    fused = ts.F.temporal_shift
    monkeypatch.setattr(ts.F, 'temporal_shift', lambda *a, **k: calls.append(1) or fused(*a, **k))
    rng = np.random.default_rng(4)
    x = paddle.to_tensor(rng.standard_normal((8, 16, 2, 2)).astype('float32'),
                         stop_gradient=False)
    w = rng.standard_normal((8, 16, 2, 2)).astype('float32')
    layer = TemporalShift(4, 0.125, direction, formulation, batch)
    (layer(x) * paddle.to_tensor(w)).sum().backward()
    opposite = 'mit' if direction == 'paddle' else 'paddle'
    np.testing.assert_array_equal(x.grad.numpy(), numpy_shift(w, 4, 0.125, opposite))
    # the fused op exists for the paddle direction only; the others always use slice
    assert len(calls) == (1 if (formulation, direction) == ('fused', 'paddle') else 0)
    x.clear_gradient()
    layer(x).sum().backward()
    g = x.grad.numpy().reshape(2, 4, 16, 2, 2)
    # each shifted fold loses exactly one frame's worth of gradient (the dropped end):
    # N=2 videos x 2 folds x 2 channels x 4 pixels lose their gradient
    assert g[:, :, 4:].min() == 1 and g.sum() == 2 * 4 * 16 * 4 - 2 * 2 * 2 * 4


def test_bad_direction_is_an_error():
    with pytest.raises(ValueError, match='direction'):
        TemporalShift(8, 0.125, 'sideways')


def numpy_backward_shift(x, seg_num, ratio):
    """backward: fold A at t takes t-1 (zero at t=0); everything else stays."""
    nt, c = x.shape[:2]
    v = x.reshape(nt // seg_num, seg_num, c, *x.shape[2:])
    out = v.copy()
    a = int(c * ratio)
    out[:, 0, :a] = 0
    out[:, 1:, :a] = v[:, :-1, :a]
    return out.reshape(x.shape)


@pytest.mark.parametrize('direction', ['paddle', 'mit', 'backward'])
@pytest.mark.parametrize('seg_num,channels,ratio', [(8, 16, 0.125), (3, 10, 0.25), (4, 64, 1 / 16),
                                                    (1, 16, 0.125), (4, 4, 0.125), (2, 8, 0.375)])
@pytest.mark.parametrize('formulation,batch', [('fused', None), ('slice', None), ('slice', 3)])
def test_formulations_agree_exactly(direction, seg_num, channels, ratio, formulation, batch):
    """Every formulation (the fused op, split+concat with a 5-D view, split+concat with
    static per-clip slices) gives the oracle's numbers bit for bit."""
    x = np.random.default_rng(2).standard_normal((3 * seg_num, channels, 2, 3)).astype('float32')
    want = (numpy_backward_shift(x, seg_num, ratio) if direction == 'backward'
            else numpy_shift(x, seg_num, ratio, direction))
    got = temporal_shift(paddle.to_tensor(x), seg_num, ratio, direction, formulation, batch)
    np.testing.assert_array_equal(got.numpy(), want)
    layer = TemporalShift(seg_num, ratio, direction, formulation, batch)
    np.testing.assert_array_equal(layer(paddle.to_tensor(x)).numpy(), want)


def test_slice_formulation_gradient_equals_the_fused_op():
    x = np.random.default_rng(3).standard_normal((8, 16, 2, 2)).astype('float32')
    grads = []
    for formulation, batch in (('fused', None), ('slice', None), ('slice', 2)):
        t = paddle.to_tensor(x, stop_gradient=False)
        (temporal_shift(t, 4, 0.125, 'paddle', formulation, batch) * paddle.arange(
            16, dtype='float32').reshape([1, 16, 1, 1])).sum().backward()
        grads.append(t.grad.numpy())
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], grads[2])


def test_bad_formulation_is_an_error():
    with pytest.raises(ValueError, match='formulation'):
        TemporalShift(8, 0.125, 'paddle', 'scatter')
