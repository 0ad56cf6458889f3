"""Paddle Inference with oneDNN: export (paddle.jit.save), load, run.

The artifact is a jit.save'd program: <prefix>.json (Paddle 3, PIR) or <prefix>.pdmodel
(Paddle 2.6), and <prefix>.pdiparams.  Input 'image' float32 [batch or None, T, 3L, S, S].
bf16 is oneDNN's bfloat16 pass at load time (the artifact stays float32).
"""
import copy
import logging
import os

import paddle

from engines.base import EngineError, Runner
from models.online import OnlineStep
from models.shift_conv import inference_copy
from utils.env import keep_freed_memory

logger = logging.getLogger(__name__)

NAME = 'paddle'
ONLINE = 'online'  # the per-frame model, as a formulation of the export
# How the per-frame model's shifts are exported (OnlineStep): a slice and a concat per block
# cost every engine layout conversions (docs/online.md).  ONNX Runtime and OpenVINO take
# 'split' (engines/onnx_export.py); oneDNN in Paddle runs the split's many small
# convolutions slowly in bf16 and takes 'conv'.
ONLINE_FORMULATION = 'conv'


def versions():
    return {'paddle': paddle.__version__}


class Softmax(paddle.nn.Layer):
    """What inference_model.py exports: probabilities, not logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return paddle.nn.functional.softmax(self.model(x), axis=-1)


def export(model, prefix, input_shape, formulation='split', batch=None, probabilities=False,
           online_formulation=None):
    """paddle.jit.save a copy of `model` in `formulation` with input [batch or None,
    *input_shape] float32 named 'image'; -> prefix.  formulation 'online' (ONLINE): the
    per-frame model of models/online.py (input_shape [3, S, S]; inputs frame, state_0...,
    outputs logits then the new states) in `online_formulation` (OnlineStep; default
    ONLINE_FORMULATION, Paddle Inference's)."""
    if formulation == ONLINE:
        net = OnlineStep(copy.deepcopy(model), online_formulation or ONLINE_FORMULATION)
        net.eval()
        spec = net.input_spec(input_shape[-1], batch or None)
    else:
        net = inference_copy(model, formulation, batch)
        if probabilities:
            net = Softmax(net)
            net.eval()
        spec = [paddle.static.InputSpec([batch or None, *input_shape], 'float32', 'image')]
    paddle.jit.save(net, prefix, input_spec=spec)
    return prefix


def program_files(prefix):
    """(program, params) of a jit.save'd model: .json (Paddle 3, PIR) or .pdmodel."""
    for ext in ('.json', '.pdmodel'):
        if os.path.isfile(prefix + ext) and os.path.isfile(prefix + '.pdiparams'):
            return prefix + ext, prefix + '.pdiparams'
    raise FileNotFoundError(f"no exported model at {prefix} (.json/.pdmodel + .pdiparams)")


def find(prefix):
    """The artifact (its prefix) when it is complete, else None."""
    try:
        program_files(prefix)
        return prefix
    except FileNotFoundError:
        return None


def create_predictor(prefix, threads=1, precision='fp32'):
    """A Paddle Inference CPU predictor with oneDNN, `threads` math threads."""
    program, params = program_files(prefix)
    keep_freed_memory()  # no page faults on every run for the activations
    config = paddle.inference.Config(program, params)
    config.disable_gpu()
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(max(1, int(threads)))
    if precision == 'bf16':
        config.enable_mkldnn_bfloat16()
    elif precision == 'int8':  # a quantized program (tools/quantize.py, to come)
        config.enable_mkldnn_int8()
    elif precision != 'fp32':
        raise EngineError(f"Paddle Inference runs fp32, bf16 or int8, not {precision!r}")
    config.disable_glog_info()
    return paddle.inference.create_predictor(config)


class PaddleRunner(Runner):
    """A Paddle Inference predictor; `batch`: the clips per call the program was exported
    for (None: any)."""

    def __init__(self, prefix, batch=None, threads=1, precision='fp32'):
        self.prefix, self.batch, self.precision = prefix, batch, precision
        self.predictor = create_predictor(prefix, threads, precision)
        self._input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self._output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])
        self.info = {'engine': NAME, 'version': paddle.__version__, 'precision': precision,
                     'artifact': program_files(prefix)[0], 'threads': int(threads),
                     'batch': batch}

    def _infer(self, x):
        self._input.reshape(list(x.shape))
        self._input.copy_from_cpu(x)
        self.predictor.run()
        return self._output.copy_to_cpu()

    def run_many(self, arrays):
        """float32 arrays for the inputs in order -> every output in order (no chunking:
        the arrays have the program's batch).  The online model's step."""
        p = self.predictor
        for name, x in zip(p.get_input_names(), arrays):
            handle = p.get_input_handle(name)
            handle.reshape(list(x.shape))
            handle.copy_from_cpu(x)
        p.run()
        return [p.get_output_handle(name).copy_to_cpu() for name in p.get_output_names()]


def load(artifact, threads=1, precision='fp32', batch=None):
    return PaddleRunner(artifact, batch, threads, precision)

