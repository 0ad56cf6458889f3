"""Where a training run starts: --resume (a checkpoint, `latest`, or released weights), else
--pretrain (ImageNet ResNet-50 by default), read on rank 0 and sent to every rank."""
import logging
import os

from models import WeightsError, load_pretrain, load_weights
from training import checkpoint
from training.loop import TrainingError
from utils.config_utils import ConfigError
from utils.download import DownloadError, fetch_if_url, released_weights
from utils.env import EnvError

logger = logging.getLogger(__name__)

# what reading the start point can raise for a user's mistake: every rank stops with
# rank 0's line
START_ERRORS = (ConfigError, WeightsError, DownloadError, EnvError, TrainingError)


def init_weights(model, optimizer, scaler, args, steps_per_epoch, seed, ranks, keep=()):
    """--resume, else --pretrain, read on rank 0 and sent to every rank, so the ranks
    agree on weights, optimizer, loss scale and position even when the checkpoint or
    the download exists on rank 0's machine only.  `keep`: model options the user gave
    explicitly, which the weights' options do not override.
    -> (first epoch, first batch of it, the run's seed)"""
    start = None
    if ranks.rank == 0:
        try:
            start = _start_point(model, args, steps_per_epoch, seed, keep)
        except START_ERRORS as e:  # every rank stops with rank 0's line
            start = {'error': str(e.args[0] if e.args else e)}
    start = ranks.from_rank0(start)
    if 'error' in start:
        raise TrainingError(start['error'])
    ranks.model_from_rank0(model)
    if start.get('optimizer') is not None:
        optimizer.set_state_dict(checkpoint.to_tensors(start['optimizer']))
    if start.get('scaler'):
        restore_scaler(scaler, start['scaler'])
    return start['epoch'], start['next_iter'], start['seed']


def restore_scaler(scaler, state):
    """The loss scale and its counters as a checkpoint saved them (a scaler that is off,
    as on the CPU, has none to restore)."""
    if getattr(scaler, '_enable', True):
        scaler.load_state_dict(state)


def _start_point(model, args, steps_per_epoch, seed, keep=()):
    """Load the weights a run starts from into `model`; -> {'epoch', 'next_iter', 'seed',
    'optimizer', 'scaler'} (optimizer None: a fresh one)."""
    fresh = {'epoch': 0, 'next_iter': 0, 'seed': seed, 'optimizer': None, 'scaler': None}
    if not args.resume:
        _pretrain(model, args.pretrain, keep)
        return fresh
    prefix = checkpoint.strip_suffix(args.resume)
    if os.path.basename(prefix) == 'latest':
        folder = os.path.dirname(prefix) or args.save_dir
        found = checkpoint.find_latest(folder, args.model_name.upper())
        if found is None:
            logger.info("--resume latest: no checkpoint in %s yet, starting afresh", folder)
            _pretrain(model, args.pretrain, keep)
            return fresh
        prefix = found
    weights = fetch_if_url(args.resume) if args.resume.startswith(('http://', 'https://')) \
        else prefix + '.pdparams' if os.path.isfile(prefix + '.pdparams') else prefix
    if not os.path.exists(weights):
        raise WeightsError(f"--resume {args.resume}: no checkpoint there (expected "
                           f"{prefix}.pdparams, and {prefix}.pdopt beside it to continue a run)")
    if not os.path.isfile(prefix + '.pdopt'):
        load_weights(model, weights, keep)  # a released model: weights only, as the model zoo did
        logger.info("resumed from %s: weights only (no %s.pdopt beside them), so training "
                    "starts at epoch 0 with a fresh optimizer", weights, prefix)
        return fresh
    state = checkpoint.read_opt_state(prefix)
    load_weights(model, weights, keep)
    epoch, next_iter = int(state['epoch']), state.get('next_iter')
    if next_iter is None or next_iter >= steps_per_epoch:
        epoch, next_iter = epoch + 1, 0
    logger.info("resumed from %s: continuing at epoch %d, iteration %d", prefix, epoch,
                next_iter)
    return {'epoch': epoch, 'next_iter': next_iter, 'seed': int(state.get('seed', seed)),
            'optimizer': state['optimizer'], 'scaler': state.get('scaler')}


def _pretrain(model, pretrain, keep=()):
    """--pretrain: a file, folder or URL; absent: ImageNet ResNet-50 (the model zoo
    publishes no other depth, and no MobileNetV2); 'none': from scratch."""
    if pretrain is None and model.backbone_name != 'resnet':
        logger.warning("no --pretrain given and there are no ImageNet %s weights in this "
                       "project's format: training from scratch (pass --pretrain PATH, e.g. "
                       "MIT's Kinetics MobileNetV2-TSM converted with "
                       "tools/convert_weights.py, or --pretrain none to say so)",
                       model.backbone_name)
    elif pretrain is None and model.backbone_depth == 50:
        logger.info("no --pretrain given: using the ImageNet ResNet-50 weights")
        pretrain = released_weights('ResNet50_pretrained')
    elif pretrain is None:
        logger.warning("no --pretrain given and the model zoo publishes no ImageNet weights "
                       "for ResNet-%d: training from scratch, which needs far more epochs "
                       "(pass --pretrain PATH, or --pretrain none to say so)",
                       model.backbone_depth)
    if pretrain and pretrain.lower() != 'none':
        load_pretrain(model, fetch_if_url(pretrain), keep)
    else:
        logger.info("training from scratch (no pretrained weights)")
