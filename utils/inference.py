"""CPU inference through Paddle Inference (oneDNN): export once, cache, run.

    net = inference_model(model, weights_path, cfg, 'TEST', threads=2)   # exports or reuses
    logits = net(imgs)       # like model(imgs): [B, T, 3L, S, S] tensor -> logits tensor

The exported program is the model in the 'split' formulation (models/shift_conv.py), one
clip per call (a fixed batch of 1 lets the shifts move frames by static slices), logits
out: evaluate() and predict() apply their own softmax.  It is cached under
$TSM_PADDLE_CACHE (default ~/.cache/tsm_paddle), keyed by a hash of the weights file, the
model's options and config, the input size, the formulation and the Paddle version; a
stale or foreign entry is never reused.  Paddle 3 writes the program as .json (PIR),
Paddle 2.6 as .pdmodel: both load here.
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import paddle

from models.shift_conv import inference_copy
from utils.download import sha256sum
from utils.env import keep_freed_memory

logger = logging.getLogger(__name__)

EXPORT_VERSION = 2  # bump when the exported program changes for the same inputs
PRECISIONS = ('fp32', 'bf16')


class Softmax(paddle.nn.Layer):
    """What inference_model.py exports: probabilities, not logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return paddle.nn.functional.softmax(self.model(x), axis=-1)


def export(model, prefix, input_shape, formulation='split', batch=None, probabilities=False):
    """paddle.jit.save a copy of `model` in `formulation` with input [batch or None,
    *input_shape] float32 named 'image'; -> prefix."""
    net = inference_copy(model, formulation, batch)
    if probabilities:
        net = Softmax(net)
        net.eval()
    spec = paddle.static.InputSpec([batch or None, *input_shape], 'float32', 'image')
    paddle.jit.save(net, prefix, input_spec=[spec])
    return prefix


def program_files(prefix):
    """(program, params) of a jit.save'd model: .json (Paddle 3, PIR) or .pdmodel."""
    for ext in ('.json', '.pdmodel'):
        if os.path.isfile(prefix + ext) and os.path.isfile(prefix + '.pdiparams'):
            return prefix + ext, prefix + '.pdiparams'
    raise FileNotFoundError(f"no exported model at {prefix} (.json/.pdmodel + .pdiparams)")


def cpu_has_bf16():
    """AVX512-BF16 or AMX: where oneDNN runs bfloat16 natively."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            flags = f.read()
    except OSError:
        return False
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def effective_precision(precision):
    """bf16 where the CPU runs it natively, else fp32 (with a warning)."""
    if precision == 'bf16' and not cpu_has_bf16():
        logger.warning("this CPU has no native bfloat16 (AVX512-BF16/AMX): running float32")
        return 'fp32'
    return precision


def create_predictor(prefix, threads=1, precision='fp32'):
    """A Paddle Inference CPU predictor with oneDNN, `threads` math threads."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    program, params = program_files(prefix)
    keep_freed_memory()  # no page faults on every run for the activations
    config = paddle.inference.Config(program, params)
    config.disable_gpu()
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(max(1, int(threads)))
    if precision == 'bf16':
        config.enable_mkldnn_bfloat16()
    config.disable_glog_info()
    return paddle.inference.create_predictor(config)


class InferenceModel:
    """An exported model behind the call signature of the eager one:
    imgs [B, ...] (tensor or array) -> logits paddle tensor [B, K].  A program exported
    for a fixed batch is fed in chunks of that size (the last one zero-padded)."""

    def __init__(self, prefix, batch=None, threads=1, precision='fp32'):
        self.prefix, self.batch, self.precision = prefix, batch, precision
        self.predictor = create_predictor(prefix, threads, precision)
        self._input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self._output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def run(self, x):
        """float32 numpy [B, ...] -> numpy outputs [B, K]."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self.batch or len(x)
        outs = []
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            n = len(chunk)
            if n < step:
                chunk = np.concatenate([chunk, np.zeros((step - n, *x.shape[1:]), np.float32)])
            self._input.reshape(list(chunk.shape))
            self._input.copy_from_cpu(chunk)
            self.predictor.run()
            outs.append(self._output.copy_to_cpu()[:n])
        return np.concatenate(outs)

    def __call__(self, imgs):
        x = imgs.numpy() if isinstance(imgs, paddle.Tensor) else np.asarray(imgs)
        return paddle.to_tensor(self.run(x))

    def eval(self):  # the loops call model.eval()
        return self

    def train(self, mode=True):
        raise RuntimeError("an exported inference model cannot be trained")


def cache_root():
    return os.environ.get('TSM_PADDLE_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'tsm_paddle')


def cache_key(weights_path, model, model_cfg, input_shape, formulation, batch):
    """Hex key of everything the exported program depends on."""
    desc = {'weights': sha256sum(weights_path), 'options': model.options(),
            'model': {k: model_cfg[k] for k in sorted(model_cfg)}, 'input': list(input_shape),
            'formulation': formulation, 'batch': batch, 'output': 'logits',
            'paddle': paddle.__version__, 'version': EXPORT_VERSION}
    text = json.dumps(desc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24], desc


def cached_export(model, weights_path, cfg, section, formulation='split', batch=1):
    """The prefix of `model` exported for cfg[section]'s input size, exported now unless
    the cache holds it already."""
    m = cfg.MODEL
    size = cfg[section].target_size
    input_shape = [m.seg_num, 3 * m.seglen, size, size]
    key, desc = cache_key(weights_path, model, dict(m), input_shape, formulation, batch)
    root = cache_root()
    final = os.path.join(root, key)
    prefix = os.path.join(final, 'model')
    try:
        program_files(prefix)
        logger.info("Paddle Inference model from the cache: %s", final)
        return prefix
    except FileNotFoundError:
        pass
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.export-', dir=root)
    try:
        logger.info("exporting the model for Paddle Inference (%s formulation) to %s",
                    formulation, final)
        export(model, os.path.join(tmp, 'model'), input_shape, formulation, batch)
        with open(os.path.join(tmp, 'meta.json'), 'w', encoding='utf-8') as f:
            json.dump(desc, f, indent=1, default=str)
        try:
            os.replace(tmp, final)
        except OSError:  # another process exported the same key first
            if not os.path.isdir(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return prefix


def inference_model(model, weights_path, cfg, section, threads=1, precision='fp32',
                    formulation='split'):
    """`model` (weights loaded) as an InferenceModel: exported (or found in the cache)
    for one clip per call."""
    precision = effective_precision(precision)
    prefix = cached_export(model, weights_path, cfg, section, formulation, batch=1)
    return InferenceModel(prefix, batch=1, threads=threads, precision=precision)
