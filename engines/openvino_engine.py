"""OpenVINO (CPU plugin): export (paddle2onnx, then OpenVINO IR), load, run.

The artifact is OpenVINO IR, <prefix>.xml + <prefix>.bin, with float32 weights
(save_model's default fp16 compression would cost accuracy), input 'image' float32
[batch or dynamic, T, 3L, S, S].  The precision is a load-time hint and is always set:
INFERENCE_PRECISION_HINT f32 for fp32 (OpenVINO itself defaults to bf16 on AMX CPUs), bf16
for bf16.  A dynamic batch is compiled static (model.reshape) for the runner's batch:
OpenVINO's dynamic-shape kernels were slower per clip (docs/engines.md); the cache exports
batch 1 (engines.BATCH), whose frame moves are static slices.
"""
import collections
import logging
import os
import shutil
import tempfile

import openvino as ov

from engines import onnx_export, paddle_engine
from engines.base import EngineError, Runner

logger = logging.getLogger(__name__)

NAME = 'openvino'
HINTS = {'fp32': 'f32', 'bf16': 'bf16', 'int8': 'f32'}  # int8: the IR's own quantized ops,
#                                                        the rest in f32
# One Core for the process (OpenVINO's advice), so one CPU plugin that is never destroyed.
# Each plugin gives the thread that first compiles with it an alternate signal stack and, when
# destroyed, puts back the stack it found if its own is still current.  Plugins destroyed in
# another order than made put back a stack another one already unmapped, and the next signal
# with a handler (SIGINT's, Paddle's SIGCHLD) then segfaults or overwrites memory
# (docs/single_process_crash.md).
CORE = ov.Core()


def versions():
    return {**onnx_export.versions(), 'openvino': ov.__version__}


def export(model, prefix, input_shape, formulation='split', batch=None, probabilities=False):
    """-> prefix.xml (+ prefix.bin), through an ONNX file that is not kept."""
    tmp = tempfile.mkdtemp(prefix='.onnx-', dir=os.path.dirname(os.path.abspath(prefix)))
    try:
        onnx_file = onnx_export.export(model, os.path.join(tmp, 'model.onnx'), input_shape,
                                       formulation, batch, probabilities, fold=False)
        model = ov.convert_model(onnx_file)
        if formulation == paddle_engine.ONLINE:
            clean_input_names(model)
        ov.save_model(model, prefix + '.xml', compress_to_fp16=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return prefix + '.xml'


def clean_input_names(model):
    """The online model's inputs named frame, state_0 ... only (paddle2onnx's casts add
    aliases that get_any_name would return)."""
    from models.online import state_names
    names = ['frame'] + state_names(len(model.inputs) - 1)[0]
    for port, name in zip(model.inputs, names):
        if name not in port.get_names():
            raise EngineError(f"the converted online model has no input {name!r}")
        port.get_tensor().set_names({name})


def find(prefix):
    complete = all(os.path.isfile(prefix + ext) for ext in ('.xml', '.bin'))
    return prefix + '.xml' if complete else None


class OpenVinoRunner(Runner):
    """A model compiled for the CPU with `threads` inference threads, one stream (latency),
    the precision hint set; static batch: the IR's, else `batch` (default 1)."""

    def __init__(self, xml, threads=1, precision='fp32', batch=None):
        if precision not in HINTS:
            raise EngineError(f"OpenVINO runs fp32, bf16 or int8, not {precision!r}")
        model = CORE.read_model(xml)
        dynamic = {i: [batch or 1] + [d.get_length() for d in list(i.get_partial_shape())[1:]]
                   for i in model.inputs if i.get_partial_shape()[0].is_dynamic}
        if dynamic:  # every input: the online model has its states beside the frame
            model.reshape({i: ov.PartialShape(shape) for i, shape in dynamic.items()})
        self.batch = model.inputs[0].get_partial_shape()[0].get_length()
        config = {'INFERENCE_PRECISION_HINT': HINTS[precision],
                  'INFERENCE_NUM_THREADS': max(1, int(threads)),
                  'PERFORMANCE_HINT': 'LATENCY', 'NUM_STREAMS': 1}
        self.compiled = CORE.compile_model(model, 'CPU', config)
        self.request = self.compiled.create_infer_request()
        self.info = {'engine': NAME, 'version': ov.__version__, 'precision': precision,
                     'artifact': xml, 'threads': int(threads), 'batch': self.batch,
                     'kernels': conv_kernels(self.compiled)}

    def _infer(self, x):
        return self.request.infer({0: x})[0]  # a copy (share_outputs=False)

    def run_many(self, arrays):
        """float32 arrays for the inputs in order -> every output in order (copies)."""
        out = self.request.infer(dict(enumerate(arrays)))
        return [out[o] for o in self.compiled.outputs]


def conv_kernels(compiled):
    """The CPU plugin's convolution kernels, commonest first, e.g. 'brgconv_avx512_amx_1x1_bf16
    x36': which instructions run ('amx': AMX tiles; the same VM has drawn hosts with and
    without AMX, far apart in bf16: docs/engines.md)."""
    info = [op.get_rt_info() for op in compiled.get_runtime_model().get_ops()]
    counts = collections.Counter(i['primitiveType'].astype(str) for i in info
                                 if i['layerType'].astype(str) == 'Convolution')
    return ', '.join(f'{k} x{n}' for k, n in counts.most_common())


def load(artifact, threads=1, precision='fp32', batch=None):
    return OpenVinoRunner(artifact, threads, precision, batch)
