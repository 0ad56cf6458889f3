"""Exported models for CPU inference, on any engine of engines/: export once, check against
the eager model, cache, load.

    net = cached_runner(model, weights_path, cfg, 'TEST', threads=2, precision='bf16',
                        backend='openvino')   # exports or reuses; -> an engines Runner
    logits = net(imgs)       # like model(imgs): [B, T, 3L, S, S] tensor -> logits tensor

The cached export is the model in its engine's formulation and batch (engines.FORMULATION,
engines.BATCH), logits out: evaluate() and predict() apply their own softmax.  It lives
under $TSM_PADDLE_CACHE (default ~/.cache/tsm_paddle), keyed by a hash of the weights
file, the model's options and config, the input size, the engine, the formulation, the
batch, what the artifact stores (float32, or int8 for a quantized model) and the version
of every package the artifact passes through; a stale or foreign entry is never reused.
An export is written to a temporary folder, checked against the eager model, then renamed
into place, so concurrent exports of the same key are safe.  fp32 and bf16 share one
float32 artifact (bf16 is a load-time setting of every engine); an int8 entry has a key of
its own, written by tools/quantize.py (jobs/quantize_job.py, through cache_entry and
publish) and only read here.
"""
import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import paddle

import engines
from engines.base import EngineError, effective_precision
from engines.paddle_engine import ONLINE
from models.online import OnlineStep, OnlineStream, OnlineTSM
from reader import clip_shape
from utils.download import sha256sum
from utils.env import available_cpus

logger = logging.getLogger(__name__)

EXPORT_VERSION = 4  # bump when the exported program changes for the same inputs
TOLERANCE = 1e-5  # probabilities, exported vs eager, fp32
ONLINE_FRAMES = 16  # the online export is checked over a sequence this long
ONLINE_TOLERANCE = 1e-4  # per-frame logits, online export vs eager, fp32, relative to the
#                          largest |logit| (absolute below 1)
QUANTIZE_HINT = ("make one with tools/quantize.py --config C --weights W --filelist L "
                 "(post-training quantization calibrated on a list file; OpenVINO), "
                 "or use --precision fp32 or bf16")


def threads():
    """Every engine's thread count: OMP_NUM_THREADS, which setup_runtime sets from
    --cpu_threads (default: the available cores)."""
    return int(os.environ.get('OMP_NUM_THREADS') or available_cpus())


def stored_precision(precision):
    """What the artifact stores: int8 is a quantized model, fp32 and bf16 one float32 model."""
    return 'int8' if precision == 'int8' else 'float32'


def cache_root():
    return os.environ.get('TSM_PADDLE_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'tsm_paddle')


def cache_key(weights_path, model, model_cfg, input_shape, backend, formulation, batch,
              precision='fp32', versions=None):
    """Hex key of everything the cached artifact depends on, and its description."""
    desc = {'weights': sha256sum(weights_path), 'options': model.options(),
            'model': {k: model_cfg[k] for k in sorted(model_cfg)}, 'input': list(input_shape),
            'engine': backend, 'formulation': formulation, 'batch': batch,
            'stored': stored_precision(precision), 'output': 'logits',
            'versions': versions or {'paddle': paddle.__version__},
            'version': EXPORT_VERSION}
    text = json.dumps(desc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24], desc


def publish(tmp, final):
    """Rename a finished temporary folder into place; another process that exported the
    same key first wins (its entry is the same)."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not os.path.isdir(final):
            raise


def check_export(model, runner, input_shape, probabilities, what):
    """The exported model against the eager one on a deterministic random batch of 2 clips
    (two, so that a frame moved across clips shows): same top-5 (up to ties) and
    probabilities within TOLERANCE, in fp32; EngineError naming `what` if not."""
    x = np.random.default_rng(0).standard_normal((2, *input_shape)).astype(np.float32)
    was_training = model.training
    model.eval()
    with paddle.no_grad():
        want = paddle.nn.functional.softmax(model(paddle.to_tensor(x)), axis=-1).numpy()
    if was_training:
        model.train()  # Paddle 2.6's train() takes no mode
    got = runner.run(x)
    if not probabilities:
        got = np.exp(got - got.max(-1, keepdims=True))
        got /= got.sum(-1, keepdims=True)
    diff = float(np.abs(got - want).max())
    k = min(5, want.shape[-1])
    # the k-th class of the export must be as probable (eagerly) as eager's k-th: equal
    # top-5, except where two classes tie within the tolerance
    eager_ranked = -np.sort(-want, axis=-1)[:, :k]
    export_ranked = np.take_along_axis(want, np.argsort(-got, axis=-1)[:, :k], axis=-1)
    top_ok = np.abs(eager_ranked - export_ranked).max() <= TOLERANCE
    if diff > TOLERANCE or not top_ok:
        raise EngineError(f"the {what} export does not compute what the eager model computes: "
                          f"probabilities differ by up to {diff:.2g} (limit {TOLERANCE:g})"
                          f"{'' if top_ok else ', top-5 differs'}; not used")
    logger.info("%s export checked against the eager model: probabilities within %.2g, same "
                "top-%d", what, diff, k)
    return diff


def cache_entry(eng, model, weights_path, cfg, section, precision, online=False):
    """Where the cache keeps `model`'s artifact for engine module `eng` in `precision`:
    -> (folder, the artifact's prefix in it, the key's description).  tools/quantize.py
    writes its int8 artifact at the prefix of an int8 entry (through publish).  online:
    the per-frame model (formulation ONLINE), one stream per call (batch 1)."""
    name = eng.NAME
    formulation, batch = (ONLINE, 1) if online else (engines.FORMULATION[name],
                                                     engines.BATCH[name])
    key, desc = cache_key(weights_path, model, dict(cfg.MODEL),
                          clip_shape(cfg, section, online=online), name, formulation, batch,
                          precision, eng.versions())
    final = os.path.join(cache_root(), key)
    return final, os.path.join(final, 'model'), desc


def cached_artifact(eng, model, weights_path, cfg, section, precision, threads=1,
                    online=False):
    """The artifact of `model` for engine module `eng` (found in the cache, or exported,
    checked and cached now); -> (artifact path, batch, cache description)."""
    final, prefix, desc = cache_entry(eng, model, weights_path, cfg, section, precision,
                                      online)
    found = eng.find(prefix)
    if found:
        logger.info("%s model from the cache: %s", eng.NAME, final)
        return found, desc['batch'], desc
    if precision == 'int8':
        raise EngineError(f"--precision int8: no quantized {eng.NAME} model of these weights; "
                          f"{QUANTIZE_HINT}")
    root = os.path.dirname(final)
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.export-', dir=root)
    try:
        logger.info("exporting the model for %s (%s formulation, batch %s) to %s", eng.NAME,
                    desc['formulation'], desc['batch'] or 'any', final)
        staged = os.path.join(tmp, os.path.basename(prefix))
        artifact = eng.export(model, staged, desc['input'], desc['formulation'], desc['batch'])
        checked = eng.load(artifact, threads, 'fp32', desc['batch'])
        if online:
            check_online_export(model, checked, desc['input'], eng.NAME)
        else:
            check_export(model, checked, desc['input'], False, eng.NAME)
        with open(os.path.join(tmp, 'meta.json'), 'w', encoding='utf-8') as f:
            json.dump(desc, f, indent=1, default=str)
        publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return eng.find(prefix), desc['batch'], desc


def cached_runner(model, weights_path, cfg, section, threads=1, precision='fp32',
                  backend='paddle'):
    """`model` (weights loaded) as an engines Runner with the eager model's call
    signature: exported for `backend` (or found in the cache), loaded in `precision`."""
    precision = effective_precision(precision)
    eng = engines.engine(engines.choose(backend, precision))
    artifact, batch, desc = cached_artifact(eng, model, weights_path, cfg, section, precision,
                                            threads)
    runner = eng.load(artifact, threads, precision, batch)
    runner.info['formulation'] = desc['formulation']
    logger.info("inference engine: %s", ', '.join(f"{k} {v}" for k, v in runner.describe()
                                                  .items()))
    return runner


def export_artifact(model, backend, prefix, input_shape, precision='fp32', formulation=None,
                    threads=1, batch=1):
    """inference_model.py: `model` exported for `backend` at `prefix` (probabilities out;
    formulation ONLINE: the per-frame model, logits and states out) with `batch` clips or
    streams per call (None: any), checked against the eager model before it is moved into
    place; -> (the artifact's path, the files written)."""
    eng = engines.engine(backend)
    if precision == 'int8':
        raise EngineError(f"--precision int8 is written by the quantization tool: "
                          f"{QUANTIZE_HINT}")
    formulation = formulation or engines.FORMULATION[backend]
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.export-', dir=folder)
    try:
        staged = eng.export(model, os.path.join(tmp, os.path.basename(prefix)), input_shape,
                            formulation, batch, probabilities=True)
        runner = eng.load(staged, threads, 'fp32', batch)
        if formulation == ONLINE:
            check_online_export(model, runner, input_shape, backend)
        else:
            check_export(model, runner, input_shape, True, backend)
        written = sorted(os.path.join(folder, f) for f in os.listdir(tmp) if f[0] != '.')
        for path in written:
            os.replace(os.path.join(tmp, os.path.basename(path)), path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return eng.find(prefix), written


# ---- online: the per-frame model (models/online.py) in an engine ----

def runner_step(runner):
    """An exported online model's step for OnlineStream: (frame, states) -> (logits,
    new states), through the engine's run_many."""
    def step(frame, states):
        out = runner.run_many([frame, *states])
        return out[0], out[1:]
    return step


def state_shapes_of(model, frame_shape):
    """[C, H, W] of every state of `model`'s per-frame model (one eager frame on a copy)."""
    return OnlineStep(copy.deepcopy(model)).state_shapes(frame_shape[-1])


def stream_logits(stream, frames):
    """frames [T, B, 3, S, S] -> the per-frame logits [T, B, K] of a fresh OnlineStream of
    window 1."""
    stream.reset()
    return np.stack([stream.step(f) for f in frames])


def compare_online(model, runner, frame_shape, frames=ONLINE_FRAMES):
    """An exported online model against the eager one over `frames` frames of a
    deterministic random stream (the runner's batch of streams; 2 side by side for any
    batch, so that a state crossing streams shows) -> (largest logit difference relative to max(1, largest
    |logit|), exported logits, eager logits), each [T, B, K]."""
    streams = runner.batch or 2
    x = np.random.default_rng(0).standard_normal(
        (frames, streams, *frame_shape)).astype(np.float32)
    want = stream_logits(OnlineTSM(copy.deepcopy(model), window=1), x)
    got = stream_logits(OnlineStream(runner_step(runner), state_shapes_of(model, frame_shape),
                                     window=1), x)
    scale = max(1.0, float(np.abs(want).max()))
    return float(np.abs(got - want).max()) / scale, got, want


def check_online_export(model, runner, frame_shape, what):
    """compare_online within ONLINE_TOLERANCE and the same top-1 at every frame (fp32);
    EngineError naming `what` if not."""
    diff, got, want = compare_online(model, runner, frame_shape)
    same_top1 = bool((got.argmax(-1) == want.argmax(-1)).all())
    if diff > ONLINE_TOLERANCE or not same_top1:
        raise EngineError(f"the online {what} export does not compute what the eager online "
                          f"model computes over {ONLINE_FRAMES} frames: logits differ by up "
                          f"to {diff:.2g} of their scale (limit {ONLINE_TOLERANCE:g})"
                          f"{'' if same_top1 else ', top-1 differs'}; not used")
    logger.info("online %s export checked against the eager online model over %d frames: "
                "logits within %.2g of their scale", what, ONLINE_FRAMES, diff)
    return diff


def online_runner(model, weights_path, cfg, section, threads=1, precision='fp32',
                  backend='paddle'):
    """The per-frame model of `model` exported for `backend` (or found in the cache) and
    loaded in `precision`; -> (runner, state shapes).  Each stream of it is
    OnlineStream(runner_step(runner), shapes, window): the states live in the stream."""
    precision = effective_precision(precision)
    eng = engines.engine(engines.choose(backend, precision))
    artifact, batch, desc = cached_artifact(eng, model, weights_path, cfg, section, precision,
                                            threads, online=True)
    runner = eng.load(artifact, threads, precision, batch)
    runner.info['formulation'] = desc['formulation']
    logger.info("online inference engine: %s", ', '.join(
        f"{k} {v}" for k, v in runner.describe().items()))
    return runner, state_shapes_of(model, desc['input'])
