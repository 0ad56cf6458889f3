"""Checkpoints: `<prefix>.pdparams` (weights) and `<prefix>.pdopt` (optimizer, LR
state, epoch, step, resolved config), each written to a temporary file and renamed,
so a crash never leaves a half-written checkpoint under the real name."""
import contextlib
import os
import re

import paddle

from training.loop import TrainingError
from utils.safe_pickle import safe_load


def atomic_save(obj, path):
    tmp = f"{path}.tmp{os.getpid()}"
    paddle.save(obj, tmp)
    os.replace(tmp, path)


def weights_bundle(model):
    """The model's state_dict plus the options its weights depend on (shift direction,
    head, ...: models.weights.OPTIONS_KEY), which load_weights applies when loading, and
    the backbone it checks."""
    from models.weight_files import OPTIONS_KEY
    state = dict(model.state_dict())
    if hasattr(model, 'options'):
        state[OPTIONS_KEY] = model.options()
        if hasattr(model, 'backbone_name'):  # checked on load (MODEL.backbone)
            state[OPTIONS_KEY]['backbone'] = model.backbone_name
    return state


def save_weights(model, path):
    atomic_save(weights_bundle(model), path)


def save_checkpoint(prefix, model, optimizer=None, **meta):
    """Write prefix.pdopt first, then prefix.pdparams: a .pdparams on disk always has
    its .pdopt beside it."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    if optimizer is not None:
        atomic_save(dict(meta, optimizer=optimizer.state_dict()), prefix + '.pdopt')
    save_weights(model, prefix + '.pdparams')


def strip_suffix(prefix):
    for ext in ('.pdparams', '.pdopt'):
        if prefix.endswith(ext):
            return prefix[:-len(ext)]
    return prefix


def read_opt_state(prefix):
    """The .pdopt bundle of a checkpoint; raises FileNotFoundError naming the file."""
    path = strip_suffix(prefix) + '.pdopt'
    if not os.path.isfile(path):
        raise FileNotFoundError(f"resume needs {path} beside the weights; not found")
    state = safe_load(path)
    return state


def to_tensors(obj):
    """Arrays read by the safe unpickler -> tensors, as optimizer.set_state_dict wants."""
    import numpy as np
    if isinstance(obj, dict):
        return {k: to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], np.ndarray):
        obj = obj[1]  # paddle.save writes nested tensors as (name, array)
    if isinstance(obj, np.ndarray):
        return paddle.to_tensor(obj)
    return obj


_NAME = re.compile(r'^(?P<name>.+)_epoch(?P<epoch>\d+)(_iter(?P<iter>\d+))?\.pdparams$')


def list_checkpoints(save_dir, name):
    """[(epoch, batches done or inf for a whole epoch, prefix)] of complete checkpoints: a
    .pdparams is written after its .pdopt, so the pair is complete when both exist."""
    found = []
    if not os.path.isdir(save_dir):
        return found
    for f in os.listdir(save_dir):
        m = _NAME.match(f)
        if m and m['name'] == name:
            prefix = os.path.join(save_dir, f[:-len('.pdparams')])
            if os.path.isfile(prefix + '.pdopt'):
                done = int(m['iter']) if m['iter'] else float('inf')
                found.append((int(m['epoch']), done, prefix))
    return sorted(found)


def find_latest(save_dir, name):
    found = list_checkpoints(save_dir, name)
    return found[-1][2] if found else None


def remove_partial(save_dir, name, keep):
    """Delete mid-epoch checkpoints other than `keep` (epoch-end ones stay)."""
    for epoch, done, prefix in list_checkpoints(save_dir, name):
        if done != float('inf') and prefix != keep:
            for ext in ('.pdparams', '.pdopt'):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(prefix + ext)


def on_rank0(ranks, what, write):
    """Run `write()` on rank 0 only (checkpoints, logs); when it cannot write, every rank
    stops with the same one-line message instead of going on without it."""
    error = None
    if ranks.rank == 0:
        try:
            write()
        except OSError as e:
            error = (f"cannot write {what} ({e.strerror or e}); stopping (free some space or "
                     f"change --save_dir, then --resume latest)")
    error = ranks.from_rank0(error)
    if error:
        raise TrainingError(error)
