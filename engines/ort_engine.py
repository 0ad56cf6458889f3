"""ONNX Runtime (CPU execution provider): export (paddle2onnx), load, run.

The artifact is one .onnx file, input 'image' float32 [batch or dynamic, T, 3L, S, S].
ONNX Runtime's CPU provider has no bfloat16 convolutions on x86 (its bf16 path is an
Arm-only GEMM option), so bf16 runs float32, with a warning.
"""
import logging
import os

import onnxruntime as ort

from engines import onnx_export
from engines.base import EngineError, Runner

logger = logging.getLogger(__name__)

NAME = 'onnxruntime'
SUFFIX = '.onnx'


def versions():
    return {**onnx_export.versions(), 'onnxruntime': ort.__version__}


def export(model, prefix, input_shape, formulation='split', batch=None, probabilities=False):
    """-> prefix.onnx"""
    return onnx_export.export(model, prefix + SUFFIX, input_shape, formulation, batch,
                              probabilities)


def find(prefix):
    return prefix + SUFFIX if os.path.isfile(prefix + SUFFIX) else None


class OrtRunner(Runner):
    """An InferenceSession with `threads` intra-op threads (one inter-op: the graph is a
    chain).  The batch is the model's when it is fixed, else any."""

    def __init__(self, onnx_file, threads=1, precision='fp32'):
        if precision == 'bf16':
            logger.warning("ONNX Runtime has no bfloat16 convolutions on this CPU: running "
                           "float32 (--backend openvino or paddle run bf16)")
            precision = 'fp32'
        elif precision not in ('fp32', 'int8'):  # int8: a quantized (QDQ) model, as given
            raise EngineError(f"ONNX Runtime runs fp32 or int8, not {precision!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = max(1, int(threads)), 1
        self.session = ort.InferenceSession(onnx_file, opts, providers=['CPUExecutionProvider'])
        inp = self.session.get_inputs()[0]
        self.input = inp.name
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.info = {'engine': NAME, 'version': ort.__version__, 'precision': precision,
                     'artifact': onnx_file, 'threads': int(threads), 'batch': self.batch}

    def _infer(self, x):
        return self.session.run(None, {self.input: x})[0]

    def run_many(self, arrays):
        """float32 arrays for the inputs in order -> every output in order."""
        names = [i.name for i in self.session.get_inputs()]
        return self.session.run(None, dict(zip(names, arrays)))


def load(artifact, threads=1, precision='fp32', batch=None):
    """`batch` is the artifact's own (read from the model)."""
    return OrtRunner(artifact, threads, precision)
