"""Reading a weights file of any source into arrays: this project's and the model zoo's
`.pdparams` (pickles, read with the safe unpickler), the model zoo's fluid parameter
folders, and the refusal of PyTorch files with the command that converts them.  The
lowest module of models/: weights.py and convert.py both read through it.
"""
import logging
import os

import numpy as np

from utils.safe_pickle import safe_load

logger = logging.getLogger(__name__)
META_KEY = 'StructuredToParameterName@@'  # written by paddle.save, not a weight
OPTIONS_KEY = '__tsm_options__'  # a plain dict of model options, not a weight
OPTION_KEYS = ('shift_direction', 'shift_ratio', 'shift_place', 'shift_every', 'head', 'dropout')


class WeightsError(ValueError):
    """Weights that cannot be read or do not fit the model; one-line message."""


class ConvertError(WeightsError):
    """Weights of a source that cannot be mapped; one-line message."""


def is_torch_file(path):
    """True for files torch.save wrote: a zip archive (torch >= 1.6) or the legacy format,
    a pickle that starts with torch's magic number."""
    with open(path, 'rb') as f:
        head = f.read(16)
    return head.startswith(b'PK\x03\x04') or head[2:14] == (
        b'\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19')


def arrays_of(obj, path):
    """An unpickled weights file -> (dict name -> ndarray, options dict or None)."""
    if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
        obj = obj['state_dict']  # MIT and mmaction2 keep the weights under 'state_dict'
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of arrays, got {type(obj).__name__}")
    options = obj.get(OPTIONS_KEY)
    if options is not None and not isinstance(options, dict):
        raise WeightsError(f"{path}: entry '{OPTIONS_KEY}' is {type(options).__name__}, "
                           f"not a dict of options")
    out = {}
    for k, v in obj.items():
        if k in (META_KEY, OPTIONS_KEY):
            continue
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], np.ndarray):
            v = v[1]  # older paddle.save wrote tensors as (name, array)
        if not isinstance(v, np.ndarray):
            raise WeightsError(f"{path}: entry '{k}' is {type(v).__name__}, not an array")
        out[str(k)] = v
    return out, options


def read_checkpoint(path):
    """path -> (dict name -> ndarray, kind 'dir' or 'pickle', options dict or None)."""
    if not os.path.exists(path) and os.path.exists(path + '.pdparams'):
        path = path + '.pdparams'
    if not os.path.exists(path):
        raise WeightsError(f"weights not found: {path}")
    if os.path.isdir(path):
        from models.lod_tensor import load_param_dir
        try:
            state = load_param_dir(path)
        except ValueError as e:
            raise WeightsError(str(e)) from None
        return {k: v for k, v in state.items() if 'fc_0' not in k}, 'dir', None
    if is_torch_file(path):
        raise WeightsError(f"{path} is a PyTorch checkpoint: convert it first with "
                           f"python -m tools.convert_weights {path} OUT.pdparams "
                           f"--from mit (or mmaction2)")
    try:
        state = safe_load(path)
    except Exception as e:  # any unpickling failure of an outside file is a bad file
        raise WeightsError(f"cannot read weights {path}: {e}") from None
    arrays, options = arrays_of(state, path)
    return arrays, 'pickle', options
