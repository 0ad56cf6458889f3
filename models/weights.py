"""Loading weights: this project's checkpoints and the released files of its peers.

Sources, told apart by their content:
  - this project's `.pdparams` (keys are the model's state_dict keys), with the model
    options its weights need under OPTIONS_KEY when tools/convert_weights.py wrote it;
  - the model zoo's released `TSM.pdparams`: a pickled dict of fluid-named arrays
    (`conv1_weights`, `bn2a_branch2a_scale`, ..., `fc_0.w_0`);
  - PaddleVideo's `TSM_k400.pdparams` (`backbone.res2a.conv0._conv.weight`, ...), and MIT /
    mmaction2 names saved as numpy arrays (their `.pth` files need torch: convert them);
  - the model zoo's `ResNet50_pretrained/` directory: one serialized tensor file per
    fluid-named parameter (ImageNet classifier `fc_0` dropped).
Weights of another project need the model options they were trained under (shift
direction, ratio, placement, head; see models/convert.py): those are applied to the model
and logged.  Loading is strict: every missing, unexpected and shape-mismatched name is listed.
"""
import logging

import numpy as np

from . import convert
from .weight_files import OPTION_KEYS, WeightsError, read_checkpoint

logger = logging.getLogger(__name__)
FC_KEYS = ('fc.weight', 'fc.bias')


def to_model_keys(model, state, path):
    """Rename fluid-named arrays to the model's state_dict keys; others pass through."""
    if 'conv1_weights' not in state:
        return state
    if not hasattr(model, 'fluid_names'):
        raise WeightsError(f"{path} has model-zoo names, which {type(model).__name__} cannot map")
    to_fluid = model.fluid_names()
    from_fluid = {v: k for k, v in to_fluid.items()}
    return {from_fluid.get(k, k): v for k, v in state.items()}


def check_fit(model, state, path, ignore=()):
    """Raise WeightsError listing every missing, unexpected and mismatched key."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in ignore}
    given = {k: v for k, v in state.items() if k not in ignore}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    mismatched = [f"{k} {tuple(given[k].shape)} vs model {own[k]}" for k in sorted(own)
                  if k in given and tuple(given[k].shape) != own[k]]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {', '.join(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {len(mismatched)}: {'; '.join(mismatched)}")
    if problems:
        raise WeightsError(f"weights {path} do not fit the model: " + ' | '.join(problems))


def _assign(model, state):
    own = model.state_dict()
    model.set_state_dict({k: np.asarray(v, dtype=own[k].numpy().dtype) for k, v in state.items()})


def _adapt(model, state, kind, options, path):
    """Rename another source's arrays to the model's keys; -> (state, options its weights
    need or None).  Converted files carry their options; raw files of another project
    get the options of the source their names identify (models/convert.py)."""
    if kind == 'pickle' and options is None:
        source = convert.detect_source(state)
        if source == 'modelzoo':
            options = convert.source_options(source)
        elif source is not None:
            state, info = convert.to_arrays(state, source)
            options = convert.source_options(source, info, seg_num=getattr(model, 'seg_num', 8))
    return to_model_keys(model, state, path), options


def _check_meta(model, options, path, full):
    """Say which config key to change when the file's depth or class count differs."""
    depth, classes = options.get('num_layers'), options.get('num_classes')
    # converted ResNets name their depth; this project's checkpoints their backbone
    backbone = options.get('backbone') or ('resnet' if depth is not None else None)
    own_backbone = getattr(model, 'backbone_name', 'resnet')
    if backbone is not None and backbone != own_backbone:
        raise WeightsError(f"{path} holds a {backbone} TSM, the model's MODEL.backbone is "
                           f"{own_backbone}: set MODEL.backbone: {backbone}, or give "
                           f"{own_backbone} weights")
    if depth is not None and depth != getattr(model, 'backbone_depth', depth):
        raise WeightsError(f"{path} holds a ResNet-{depth} TSM, the model is ResNet-"
                           f"{model.backbone_depth}: set MODEL.num_layers: {depth}")
    own = model.state_dict().get('fc.weight')
    if full and classes is not None and own is not None and own.shape[-1] != classes:
        raise WeightsError(f"{path} has {classes} classes, the model {own.shape[-1]}: set "
                           f"MODEL.num_classes: {classes} (or finetune with --pretrain)")


def _setting(key, value):
    return f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}"


def _keep_given(model, wanted, keep, path):
    """Drop from `wanted` the options the user gave explicitly (`keep`: option names);
    warn for each one the weights were trained otherwise."""
    current = model.options() if hasattr(model, 'options') else {}
    for key in sorted(set(wanted) & set(keep)):
        trained = wanted.pop(key)
        if key in current and current[key] != trained:
            logger.warning("%s: keeping MODEL.%s as given on the command line; the "
                           "weights were trained with %s", path,
                           _setting(key, current[key]), _setting(key, trained))


def apply_options(model, options, path, full=True, keep=()):
    """Set the model options the weights were trained under and log them.  full=False
    (finetuning) leaves dropout, a training choice, to the config.  keep: option names
    the user gave explicitly (flag or -o), left as they are."""
    wanted = {k: options[k] for k in OPTION_KEYS if k in options}
    if not full:
        wanted.pop('dropout', None)
    _keep_given(model, wanted, keep, path)
    if not wanted:
        return {}
    if not hasattr(model, 'set_options'):
        raise WeightsError(f"{path} needs the options {wanted}, which "
                           f"{type(model).__name__} cannot take")
    changed = model.set_options(**wanted)
    logger.info("%s: %s weights; applied the options they need: %s", path,
                options.get('source', 'converted'),
                ', '.join(_setting(k, v) for k, v in wanted.items()))
    if changed:
        what = '; '.join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
        logger.warning("%s: overriding the config to match the weights: %s%s", path, what,
                       '' if full else " (checkpoints this run saves do not record these: "
                       "evaluate them with a config that sets them)")
    if 'seg_num' in options and options['seg_num'] != getattr(model, 'seg_num', None):
        logger.warning("%s: PaddleVideo shifts 1/num_seg of the channels; these weights "
                       "were converted for seg_num %s (ratio %.6g), the model runs %s "
                       "segments", path, options['seg_num'], options['shift_ratio'],
                       model.seg_num)
    return changed


def load_weights(model, path, keep=()):
    """Load a full checkpoint (this project's, a converted one, or another project's in
    a format that needs no extra dependency) strictly, with the options it needs, except
    those named in `keep` (the model options the user gave explicitly: they stand)."""
    state, kind, options = read_checkpoint(path)
    state, options = _adapt(model, state, kind, options, path)
    if options:
        _check_meta(model, options, path, full=True)
    check_fit(model, state, path)
    if options:
        apply_options(model, options, path, full=True, keep=keep)
    _assign(model, state)
    logger.info("loaded weights from %s (%d arrays)", path, len(state))


def load_pretrain(model, path, keep=()):
    """Initialise from ImageNet or another dataset's weights: everything but a FC that
    does not fit (another class count) must fit; returns the keys left at their init.
    Kinetics weights of another project bring the shift and head options they need,
    except those named in `keep` (given explicitly by the user)."""
    state, kind, options = read_checkpoint(path)
    state, options = _adapt(model, state, kind, options, path)
    if options:
        _check_meta(model, options, path, full=False)
    own = model.state_dict()
    skipped = [k for k in FC_KEYS if k not in state
               or tuple(state[k].shape) != tuple(own[k].shape)]
    check_fit(model, state, path, ignore=skipped)
    if options:
        apply_options(model, options, path, full=False, keep=keep)
    _assign(model, {k: v for k, v in state.items() if k not in skipped})
    if skipped:
        why = 'not in the file' if kind == 'dir' or 'fc.weight' not in state else (
            f"class count {state['fc.weight'].shape[-1]} != {own['fc.weight'].shape[-1]}")
        logger.info("pretrain %s: loaded everything but the FC (%s); FC starts from its "
                    "initialisation", path, why)
    else:
        logger.info("pretrain %s: loaded every weight, FC included", path)
    return skipped
