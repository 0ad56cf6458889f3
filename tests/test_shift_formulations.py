"""Each engine's shift formulation (engines.FORMULATION) through that engine equals the
eager model for every shift option: the paddle, mit and backward directions, blockres and
block placement, a shift in every 2nd block, one clip and three per call.
tests/test_engines.py covers the default options; tests/test_inference.py the formulations
in eager Paddle.  The oracle is the eager model's softmax: within 1e-5, same top-5."""

import numpy as np
import paddle
import pytest

import engines
from tests.test_engines import SHAPE, assert_same_as_eager, clips, eager_probs
from tests.test_inference import softmax, tiny_tsm

# (direction, place, every): each option at least once beside the defaults
CASES = [('mit', 'block', 2), ('backward', 'blockres', 1)]


@pytest.mark.parametrize('name', ['openvino', 'onnxruntime', 'paddle'])
@pytest.mark.parametrize('direction,place,every', CASES)
def test_engine_formulation_equals_eager(tmp_path, name, direction, place, every):
    model = tiny_tsm(18, seg=4, size=32, classes=7, seed=5, shift_direction=direction,
                     shift_place=place, shift_every=every)
    eng = engines.engine(name)
    prefix = str(tmp_path / 'model')
    batch = engines.BATCH[name]
    runner = eng.load(eng.export(model, prefix, SHAPE, engines.FORMULATION[name], batch),
                      threads=1, precision='fp32', batch=batch)
    for n in (1, 3):
        x = clips(n, seed=10 + n)
        assert_same_as_eager(softmax(runner.run(x)), eager_probs(model, x))


def test_conv_formulation_moves_the_folds_with_a_block_shift():
    """With shift_place 'block' the shortcut reads the shifted tensor, so 'conv' has no
    convolution to fold the shift into: it exports the split arrangement instead."""
    from models.shift_conv import PartsBackbone, inference_copy
    block = tiny_tsm(18, shift_place='block')
    assert isinstance(inference_copy(block, 'conv', 1).backbone, PartsBackbone)
    assert not isinstance(inference_copy(tiny_tsm(18), 'conv', 1).backbone, PartsBackbone)


def test_the_options_change_the_output():
    """The cases differ from the default shift and from each other, so a formulation that
    ignored an option would fail above."""
    x = paddle.to_tensor(clips(2))
    outs = [eager_probs(tiny_tsm(18, seed=5, shift_direction=d, shift_place=p,
                                 shift_every=e), x.numpy())
            for d, p, e in [('paddle', 'blockres', 1)] + CASES]
    for i in range(len(outs)):
        for j in range(i):
            assert np.abs(outs[i] - outs[j]).max() > 1e-4, (i, j)
