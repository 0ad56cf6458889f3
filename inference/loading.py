"""The one way eval.py, predict.py, inference_model.py, tools/quantize.py and the server
get their model: the runtime set up, the registered model built, --weights (or the
released ones) loaded with the MODEL keys the user gave kept, and the model wrapped in
the inference engine that --use_inference/--backend/--precision ask for.

    loaded = load_for_inference(args, cfg, 'test')     # -> Loaded(model, weights, rank, world)
    net = for_inference(loaded.model, args, cfg, 'TEST', loaded.weights)
"""
import copy
import logging
from typing import NamedTuple

import paddle

from engines.base import default_precision
from inference import artifacts
from models import WeightsError, get_model, load_weights
from models import online
from utils.config_utils import ConfigError, explicit_keys
from utils.download import fetch_if_url, released_weights
from utils.env import setup_runtime

logger = logging.getLogger(__name__)


class Loaded(NamedTuple):
    model: object  # the eager model, weights loaded
    weights: str  # the weights file it was loaded from
    rank: int
    world: int


def load_for_inference(args, cfg, mode='infer'):
    """Threads, device and process group (setup_runtime); the registered model of
    --model_name built for `mode` ('test' or 'infer'); --weights, or the released
    weights, loaded with the MODEL keys the user gave explicitly kept.  -> Loaded"""
    rank, world = setup_runtime(cfg, args)
    model = get_model(args.model_name, cfg, mode)
    weights = resolve_weights(args.weights, cfg.MODEL.backbone)
    load_weights(model, weights, keep=explicit_keys(cfg, 'MODEL'))
    return Loaded(model, weights, rank, world)


def resolve_weights(path, backbone='resnet'):
    """--weights as given, or the released model-zoo TSM (downloaded when absent; a
    ResNet-50, so there is none for MODEL.backbone mobilenetv2)."""
    if path:
        return fetch_if_url(path)
    if backbone != 'resnet':
        raise WeightsError(f"no released weights for MODEL.backbone {backbone}: pass --weights "
                           f"(MIT's MobileNetV2-TSM converted with tools/convert_weights.py, "
                           f"or a checkpoint of train.py)")
    logger.info("no --weights given: using the released model-zoo TSM weights")
    return released_weights('TSM')


def check_online(model):
    """ConfigError naming why `model` cannot run one frame at a time (seglen, shift
    direction), before any export."""
    try:
        online.check_online(model)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def engine_settings(args):
    """--use_inference (default: on the CPU), --precision (default bf16 where the CPU has
    it, else fp32) and --backend -> (precision, backend), or None for the eager model."""
    on_cpu = paddle.get_device().startswith('cpu')
    use = getattr(args, 'use_inference', None)
    if use is None:
        use = on_cpu
    asked = getattr(args, 'precision', None)
    if use and not on_cpu:
        logger.warning("--use_inference runs on the CPU only: using the eager model on %s",
                       paddle.get_device())
        use = False
    if not use:
        if asked not in (None, 'fp32'):
            logger.warning("--precision %s applies to an inference engine: the eager model "
                           "runs float32", asked)
        return None
    return asked or default_precision(), getattr(args, 'backend', 'auto')


def for_inference(model, args, cfg, section, weights, threads=None):
    """`model` exported once (cached) for --backend's engine and run in --precision with
    `threads` (default: --cpu_threads, else every core), behind the model's call
    signature (inference/artifacts.py, engines/); the eager model itself when engine_settings
    says so."""
    settings = engine_settings(args)
    if settings is None:
        return model
    return artifacts.cached_runner(model, weights, cfg, section,
                                   threads or artifacts.threads(), *settings)


def online_for_inference(model, args, cfg, section, weights, threads=None):
    """The per-frame model of `model` (models/online.py) as engine_settings says: -> a
    function window -> a new OnlineStream (each with states of its own), and what runs it
    ({'engine', 'precision', ...})."""
    check_online(model)  # seglen, shift direction: before any export
    settings = engine_settings(args)
    if settings is None:
        return (lambda window: online.OnlineTSM(copy.deepcopy(model), window),
                {'engine': 'eager', 'precision': 'fp32'})
    runner, shapes = artifacts.online_runner(model, weights, cfg, section,
                                             threads or artifacts.threads(), *settings)
    step = artifacts.runner_step(runner)
    return (lambda window: online.OnlineStream(step, shapes, window, runner.batch),
            runner.describe())
