"""Loading weights: this project's checkpoints and the model zoo's released files.

Sources, told apart by their content:
  - this project's `.pdparams` (keys are the model's state_dict keys);
  - the model zoo's released `TSM.pdparams`: a pickled dict of fluid-named arrays
    (`conv1_weights`, `bn2a_branch2a_scale`, ..., `fc_0.w_0`);
  - the model zoo's `ResNet50_pretrained/` directory: one serialized tensor file per
    fluid-named parameter (ImageNet classifier `fc_0` dropped).
Loading is strict: every missing, unexpected and shape-mismatched name is listed.
"""
import logging
import os

import numpy as np

from utils.safe_pickle import safe_load

logger = logging.getLogger(__name__)
META_KEY = 'StructuredToParameterName@@'  # written by paddle.save, not a weight
FC_KEYS = ('fc.weight', 'fc.bias')


class WeightsError(ValueError):
    """Weights that cannot be read or do not fit the model; one-line message."""


def read_state(path):
    """path -> (dict name -> ndarray, kind) with kind 'dir' or 'pickle'."""
    if not os.path.exists(path) and os.path.exists(path + '.pdparams'):
        path = path + '.pdparams'
    if not os.path.exists(path):
        raise WeightsError(f"weights not found: {path}")
    if os.path.isdir(path):
        from utils.lod_tensor import load_param_dir
        try:
            state = load_param_dir(path)
        except ValueError as e:
            raise WeightsError(str(e)) from None
        return {k: v for k, v in state.items() if 'fc_0' not in k}, 'dir'
    try:
        state = safe_load(path)
    except Exception as e:  # any unpickling failure of an outside file is a bad file
        raise WeightsError(f"cannot read weights {path}: {e}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a dict of arrays, got {type(state).__name__}")
    out = {}
    for k, v in state.items():
        if k == META_KEY:
            continue
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], np.ndarray):
            v = v[1]  # older paddle.save wrote tensors as (name, array)
        if not isinstance(v, np.ndarray):
            raise WeightsError(f"{path}: entry '{k}' is {type(v).__name__}, not an array")
        out[str(k)] = v
    return out, 'pickle'


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


def load_weights(model, path):
    """Load a full checkpoint (this project's or the model zoo's) strictly."""
    state, _ = read_state(path)
    state = to_model_keys(model, state, path)
    check_fit(model, state, path)
    _assign(model, state)
    logger.info("loaded weights from %s (%d arrays)", path, len(state))


def load_pretrain(model, path):
    """Initialise from ImageNet or another dataset's weights: everything but a FC that
    does not fit (another class count) must fit; returns the keys left at their init."""
    state, kind = read_state(path)
    state = to_model_keys(model, state, path)
    own = model.state_dict()
    skipped = [k for k in FC_KEYS if k not in state
               or tuple(state[k].shape) != tuple(own[k].shape)]
    check_fit(model, state, path, ignore=skipped)
    _assign(model, {k: v for k, v in state.items() if k not in skipped})
    if skipped:
        why = 'not in the file' if kind == 'dir' or 'fc.weight' not in state else (
            f"class count {state['fc.weight'].shape[-1]} != {own['fc.weight'].shape[-1]}")
        logger.info("pretrain %s: loaded everything but the FC (%s); FC starts from its "
                    "initialisation", path, why)
    else:
        logger.info("pretrain %s: loaded every weight, FC included", path)
    return skipped
