"""MIT's MobileNetV2-TSM weights -> this project's MobileNetV2 TSM state_dict keys.

Two layouts, both torchvision-style `features` lists (MIT `archs/mobilenet_v2.py` and
`online_demo/mobilenet_v2_tsm.py`): `features.0` the stem (`0.0` conv, `0.1` BN),
`features.1` .. `features.17` the inverted-residual blocks, `features.18` the 1x1 conv to
1280 (`18.0`, `18.1`).  A block's `conv` Sequential holds conv, BN, ReLU6 triples:
expand (t > 1), depthwise, project (no ReLU6), so `conv.M` is
    t > 1: 0/1 expand, 3/4 depthwise, 6/7 project;   t = 1: 0/1 depthwise, 3/4 project.

  mit         TSN of ops/models.py (`module.base_model.features...`): the shifted blocks'
              `conv.0` is wrapped by TemporalShift, so their key reads `conv.0.net.weight`;
              the classifier is `new_fc` (the base model's `classifier` is a Dropout), or
              `base_model.classifier` when trained without dropout.  Shift: MIT's
              direction, 1/shift_div, blockres, logits averaged over segments.
  mit_online  the online demo's Jester model (`features...`, `classifier` with 27
              classes): no wrapper in the keys; its InvertedResidualWithShift replaces the
              first c//8 channels by the previous frame's (a backward shift of 1/8).
"""
import re

import numpy as np

from .mobilenet_v2 import block_specs, shiftable_blocks
from .weight_files import ConvertError

_BN = {'weight': 'weight', 'bias': 'bias', 'running_mean': '_mean', 'running_var': '_variance'}
_FEATURE = re.compile(r'(?:base_model\.)?features\.(\d+)\.(?:([01])|conv\.(\d+)(\.net)?)\.(\w+)$')
_FC = re.compile(r'(new_fc|base_model\.classifier|classifier)\.(weight|bias)$')
_SKIP = re.compile(r'(^|\.)num_batches_tracked$')
# conv.M -> (part, conv or BN) of a block with an expansion conv (t > 1) and without
_PARTS = {
    True: {0: ('expand', 'conv'), 1: ('expand', 'bn'), 3: ('depthwise', 'conv'),
           4: ('depthwise', 'bn'), 6: ('project', 'conv'), 7: ('project', 'bn')},
    False: {0: ('depthwise', 'conv'), 1: ('depthwise', 'bn'), 3: ('project', 'conv'),
            4: ('project', 'bn')},
}


def block_expands():
    """Per block (features.1 .. features.17): True when it has an expansion conv."""
    return [t != 1 for _, _, _, t in block_specs()]


def is_mobilenet(state):
    """True when `state` (without `module.`) has MobileNetV2 `features` keys."""
    return any(_FEATURE.match(k) for k in state)


def _layer_key(layer, kind, param):
    """('backbone.stem', 'conv', 'weight') -> 'backbone.stem.conv.weight'; None: no such
    parameter (a conv has no bias here)."""
    if kind == 'conv':
        return f"{layer}.conv.weight" if param == 'weight' else None
    return f"{layer}.bn.{_BN[param]}" if param in _BN else None


def _feature_key(match, expands, shifted):
    """A `features` key's match -> this project's key (None: not a parameter we have)."""
    index, seq, m, net, param = match.groups()
    index, last = int(index), len(expands) + 1
    if index in (0, last) and seq is not None:
        layer = 'backbone.stem' if index == 0 else 'backbone.last'
        return _layer_key(layer, 'conv' if seq == '0' else 'bn', param)
    if not 1 <= index < last or m is None:
        return None
    part = _PARTS[expands[index - 1]].get(int(m))
    if part is None or (net and int(m) != 0):  # only conv.0 is ever wrapped
        return None
    if net:
        shifted.add(index - 1)
    return _layer_key(f"backbone.blocks.{index - 1}.{part[0]}", part[1], param)


def to_model_state(state, source):
    """MIT MobileNetV2 arrays (no `module.`) -> (this project's keys -> arrays, info).
    info: backbone, num_classes, shifted (blocks with a TemporalShift in their keys)."""
    expands, shifted, out, unknown = block_expands(), set(), {}, []
    for key, v in state.items():
        if _SKIP.search(key):
            continue
        m, fc = _FEATURE.match(key), _FC.match(key)
        ours = _feature_key(m, expands, shifted) if m else None
        if fc:
            ours = 'fc.weight' if fc.group(2) == 'weight' else 'fc.bias'
            v = np.asarray(v).T if ours == 'fc.weight' else v  # torch [out, in] -> [in, out]
        if ours is None:
            unknown.append(key)
        elif ours in out:
            raise ConvertError(f"{source} weights: '{key}' maps onto a slot already filled")
        else:
            out[ours] = np.ascontiguousarray(v)
    if unknown:
        shown = ', '.join(unknown[:8]) + (' ...' if len(unknown) > 8 else '')
        raise ConvertError(f"{len(unknown)} key(s) are not {source} MobileNetV2-TSM weights "
                           f"(width 1.0 only): {shown}")
    if 'fc.weight' not in out or 'backbone.stem.conv.weight' not in out:
        raise ConvertError(f"not a {source} MobileNetV2-TSM checkpoint: no stem conv or no "
                           f"classifier among its {len(state)} keys")
    return out, {'backbone': 'mobilenetv2', 'num_classes': int(out['fc.weight'].shape[1]),
                 'shifted': sorted(shifted)}


def check_shifted(shifted, source):
    """MIT shifts every block with an expansion conv and a residual connection, or none;
    -> whether these weights were trained with a shift."""
    if shifted and shifted != shiftable_blocks():
        raise ConvertError(f"{source} weights: shifted blocks {shifted} are not MIT's "
                           f"{shiftable_blocks()} (the blocks with a residual connection)")
    return bool(shifted)
