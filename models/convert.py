"""Published TSM weights -> this project's model: names, layouts, and the options they need.

Four sources publish ResNet-TSM weights, each with its own names and conventions (read from
their code, cited below):

  source       keys (example)                              shift                      head
  modelzoo     conv1_weights, bn2a_branch2a_scale, fc_0.w_0  paddle op, 1/8, blockres   feature_mean
  paddlevideo  backbone.res2a.conv0._conv.weight, head.fc.*  paddle op, 1/num_seg       logit_mean
  mit          module.base_model.layer1.0.conv1.net.weight   mit, 1/shift_div           logit_mean
  mmaction2    backbone.layer1.0.conv1.conv.net.weight       mit, 1/shift_div           logit_mean

MIT's MobileNetV2-TSM files (its Kinetics TSM, `--from mit` as the ResNets, and the online
demo's Jester model, `mit_online`) go straight to this project's keys
(models/convert_mobilenet.py); `to_arrays` picks the path.  For the ResNets, every source
is first read into one canonical form, the model zoo's fluid names
(`res2a_branch2a_weights`, `bn2a_branch2a_scale`, `fc_0.w_0` as [in, out]); `TSM.fluid_names`
maps those onto the model's keys by rule.  What the weights need besides their values (shift
direction, ratio, placement, which blocks shift, head) comes back as an options dict that
`models.weights` applies to the model and `tools/convert_weights.py` stores in the converted
file under `models.weights.OPTIONS_KEY`.
"""
import os
import re

import numpy as np

from .resnet import NET_CONFIG, STAGE_WIDTHS, block_name
from .temporal_shift import fold_sizes
from .weight_files import ConvertError, arrays_of, is_torch_file, read_checkpoint

SOURCES = ('modelzoo', 'paddlevideo', 'mit', 'mmaction2', 'mit_online')

_BRANCH = ('2a', '2b', '2c', '1')  # fluid suffixes: residual convs a/b/c, shortcut 1
_TORCH_BN = {'weight': 'scale', 'bias': 'offset', 'running_mean': 'mean',
             'running_var': 'variance'}
_PADDLE_BN = {'weight': 'scale', 'bias': 'offset', '_mean': 'mean', '_variance': 'variance'}
_SKIP = re.compile(r'(^|\.)num_batches_tracked$|^data_preprocessor\.')


def strip_prefix(state, prefix='module.'):
    """Drop the `module.` that torch DataParallel puts before every key (MIT's files)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def detect_source(state):
    """The source whose names `state` uses, or None (this project's own names)."""
    keys = set(state)
    if 'conv1_weights' in keys:
        return 'modelzoo'
    if 'backbone.conv._conv.weight' in keys:
        return 'paddlevideo'
    if 'backbone.conv1.conv.weight' in keys:
        return 'mmaction2'
    if any(k.startswith(('base_model.', 'module.base_model.')) for k in keys):
        return 'mit'
    if 'features.0.0.weight' in keys and 'classifier.weight' in keys:
        return 'mit_online'  # MIT online_demo's MobileNetV2 (no TSN wrapper)
    return None


class _Parsed:
    """Arrays keyed by (unit, param): unit 'stem' / 'fc' / (stage, index, branch)."""

    def __init__(self, source):
        self.source, self.arrays, self.unknown = source, {}, []
        self.shifted, self.places = set(), set()  # torch sources: blocks with a shift

    def put(self, unit, param, key, value):
        if (unit, param) in self.arrays:
            raise ConvertError(f"{self.source} weights: '{key}' maps onto a slot already filled")
        self.arrays[(unit, param)] = value


def _fluid_index(letter, digits):
    """res4a -> 0, res4c -> 2; ResNet-101/152 stage 4 names res4b1, res4b2, ... -> 1, 2."""
    return int(digits) if digits else ord(letter) - 97


# --- modelzoo: PaddleCV/video/models/tsm/tsm_res_model.py (fluid ParamAttr names) ---------
_MZ_CONV = re.compile(r'res(\d)([a-z])(\d*)_branch(2[abc]|1)_weights$')
_MZ_BN = re.compile(r'bn(\d)([a-z])(\d*)_branch(2[abc]|1)_(scale|offset|mean|variance)$')
_MZ_STEM_BN = re.compile(r'bn_conv1_(scale|offset|mean|variance)$')


def _parse_modelzoo(state, p):
    for key, v in state.items():
        if key == 'conv1_weights':
            p.put('stem', 'weights', key, v)
        elif key in ('fc_0.w_0', 'fc_0.b_0'):
            p.put('fc', 'w' if key.endswith('w_0') else 'b', key, v)
        elif _MZ_STEM_BN.match(key):
            p.put('stem', _MZ_STEM_BN.match(key).group(1), key, v)
        else:
            m = _MZ_CONV.match(key) or _MZ_BN.match(key)
            if m is None:
                p.unknown.append(key)
                continue
            unit = (int(m.group(1)) - 2, _fluid_index(m.group(2), m.group(3)), m.group(4))
            p.put(unit, m.group(5) if m.re is _MZ_BN else 'weights', key, v)


# --- paddlevideo: paddlevideo/modeling/backbones/resnet_tsm.py (ConvBNLayer `_conv` /
# `_batch_norm`; BottleneckBlock conv0/conv1/conv2/short added as sublayer `res2a` ...) and
# heads/tsm_head.py (`fc`, paddle Linear [in, out]); framework/recognizers/base.py puts
# them under `backbone.` and `head.`.
_PV_STEM = re.compile(r'backbone\.conv\.(_conv|_batch_norm)\.(\w+)$')
_PV_BLOCK = re.compile(
    r'backbone\.res(\d)([a-z])(\d*)\.(conv0|conv1|conv2|short)\.(_conv|_batch_norm)\.(\w+)$')
_PV_BRANCH = {'conv0': '2a', 'conv1': '2b', 'conv2': '2c', 'short': '1'}


def _parse_paddlevideo(state, p):
    for key, v in state.items():
        m_stem, m_block = _PV_STEM.match(key), _PV_BLOCK.match(key)
        if m_stem or m_block:
            if m_stem:
                unit, layer, param = 'stem', m_stem.group(1), m_stem.group(2)
            else:
                g = m_block.groups()
                unit = (int(g[0]) - 2, _fluid_index(g[1], g[2]), _PV_BRANCH[g[3]])
                layer, param = g[4], g[5]
            name = 'weights' if (layer, param) == ('_conv', 'weight') else (
                _PADDLE_BN.get(param) if layer == '_batch_norm' else None)
            if name is None:
                p.unknown.append(key)
            else:
                p.put(unit, name, key, v)
        elif key in ('head.fc.weight', 'head.fc.bias'):
            p.put('fc', 'w' if key.endswith('weight') else 'b', key, v)
        else:
            p.unknown.append(key)


# --- mit: mit-han-lab/temporal-shift-module ops/models.py (TSN: torchvision ResNet as
# `base_model`, classifier `new_fc`, or `base_model.fc` when dropout is 0) and
# ops/temporal_shift.py (TemporalShift wraps `net`: blockres -> `layerL.B.conv1.net`,
# block -> `layerL.B.net.conv1`); torchvision Bottleneck conv1/bn1..conv3/bn3, downsample.0/1.
_MIT_STEM = re.compile(r'base_model\.(conv1|bn1)\.(\w+)$')
_MIT_BLOCK = re.compile(r'base_model\.layer([1-4])\.(\d+)\.(net\.)?(conv|bn)([123])\.(net\.)?(\w+)$')
_MIT_DOWN = re.compile(r'base_model\.layer([1-4])\.(\d+)\.(net\.)?downsample\.([01])\.(\w+)$')
_MIT_FC = re.compile(r'(new_fc|base_model\.fc)\.(weight|bias)$')


def _torch_param(kind, param):
    """('conv', 'weight') -> 'weights'; ('bn', 'running_mean') -> 'mean'; else None."""
    if kind == 'conv':
        return 'weights' if param == 'weight' else None
    return _TORCH_BN.get(param)


def _put_torch(p, key, v, unit, kind, param, block_net, conv_net):
    name = _torch_param(kind, param)
    if name is None:
        p.unknown.append(key)
        return
    p.put(unit, name, key, v)
    for wrapped, place in ((block_net, 'block'), (conv_net, 'blockres')):
        if wrapped:  # a TemporalShift's `.net` in the key: this block shifts
            p.shifted.add(unit[:2])
            p.places.add(place)


def _parse_mit(state, p):
    for key, v in state.items():
        if _SKIP.search(key):
            continue
        m = _MIT_STEM.match(key)
        if m:
            _put_torch(p, key, v, 'stem', 'conv' if m.group(1) == 'conv1' else 'bn',
                       m.group(2), None, None)
            continue
        m = _MIT_BLOCK.match(key)
        if m:
            stage, idx, bnet, kind, n, cnet, param = m.groups()
            if cnet and (kind != 'conv' or n != '1'):  # only conv1 is wrapped (blockres)
                p.unknown.append(key)
                continue
            unit = (int(stage) - 1, int(idx), _BRANCH[int(n) - 1])
            _put_torch(p, key, v, unit, kind, param, bnet, cnet)
            continue
        m = _MIT_DOWN.match(key)
        if m:
            stage, idx, bnet, which, param = m.groups()
            _put_torch(p, key, v, (int(stage) - 1, int(idx), '1'),
                       'conv' if which == '0' else 'bn', param, bnet, None)
            continue
        m = _MIT_FC.match(key)
        if m:
            p.put('fc', 'w' if m.group(2) == 'weight' else 'b', key, v)
            continue
        p.unknown.append(key)


# --- mmaction2: mmaction/models/backbones/resnet.py (mmcv ConvModule `.conv` / `.bn`:
# stem `conv1`, Bottleneck conv1..conv3, `downsample` a ConvModule) and resnet_tsm.py
# (blockres: `blocks[i].conv1.conv = TemporalShift(...)` -> `conv1.conv.net`; block:
# `layerL.B.net`); heads/tsm_head.py `fc_cls` (torch Linear [out, in]) under `cls_head.`.
_MM_STEM = re.compile(r'backbone\.conv1\.(conv|bn)\.(\w+)$')
_MM_BLOCK = re.compile(
    r'backbone\.layer([1-4])\.(\d+)\.(net\.)?conv([123])\.(conv|bn)\.(net\.)?(\w+)$')
_MM_DOWN = re.compile(r'backbone\.layer([1-4])\.(\d+)\.(net\.)?downsample\.(conv|bn)\.(\w+)$')
_MM_FC = re.compile(r'cls_head\.fc_cls\.(weight|bias)$')


def _parse_mmaction2(state, p):
    for key, v in state.items():
        if _SKIP.search(key):
            continue
        m = _MM_STEM.match(key)
        if m:
            _put_torch(p, key, v, 'stem', m.group(1), m.group(2), None, None)
            continue
        m = _MM_BLOCK.match(key)
        if m:
            stage, idx, bnet, n, kind, cnet, param = m.groups()
            if cnet and (kind != 'conv' or n != '1'):  # only conv1.conv is wrapped (blockres)
                p.unknown.append(key)
                continue
            unit = (int(stage) - 1, int(idx), _BRANCH[int(n) - 1])
            _put_torch(p, key, v, unit, kind, param, bnet, cnet)
            continue
        m = _MM_DOWN.match(key)
        if m:
            stage, idx, bnet, kind, param = m.groups()
            _put_torch(p, key, v, (int(stage) - 1, int(idx), '1'), kind, param, bnet, None)
            continue
        m = _MM_FC.match(key)
        if m:
            p.put('fc', 'w' if m.group(1) == 'weight' else 'b', key, v)
            continue
        p.unknown.append(key)


_PARSERS = {'modelzoo': _parse_modelzoo, 'paddlevideo': _parse_paddlevideo,
            'mit': _parse_mit, 'mmaction2': _parse_mmaction2}
_TORCH_LAYOUT = ('mit', 'mmaction2')  # Linear weight stored [out, in]


def _depth(p):
    """Block counts per stage and block type -> ResNet depth, checked against NET_CONFIG."""
    blocks = sorted({u[:2] for u, _ in p.arrays if isinstance(u, tuple)})
    counts = [0, 0, 0, 0]
    for stage, idx in blocks:
        if not 0 <= stage < 4:
            raise ConvertError(f"{p.source} weights: stage {stage + 2} is not a ResNet stage")
        counts[stage] = max(counts[stage], idx + 1)
    if len(blocks) != sum(counts):
        raise ConvertError(f"{p.source} weights: blocks missing in a stage (have {blocks})")
    kind = 'bottleneck' if any(u[2] == '2c' for u, _ in p.arrays if isinstance(u, tuple)) \
        else 'basic'
    for depth, (k, c) in NET_CONFIG.items():
        if k == kind and list(c) == counts:
            return depth
    raise ConvertError(f"{p.source} weights: {kind} blocks {counts} per stage match no "
                       f"ResNet depth in {sorted(NET_CONFIG)}")


def _shift_every(p):
    """Which blocks the torch sources shift: every block (1) or every 2nd (2, their n_round
    for ResNet-101/152 with blockres); anything else is not something they build."""
    blocks = {u[:2] for u, _ in p.arrays if isinstance(u, tuple)}
    for every in (1, 2):
        if p.shifted == {b for b in blocks if b[1] % every == 0}:
            return every
    raise ConvertError(f"{p.source} weights: shifted blocks {sorted(p.shifted)} follow no "
                       f"pattern the source builds")


def to_fluid(state, source):
    """Source-named arrays -> (fluid-named arrays, info).  info: num_layers, num_classes
    and, for the PyTorch sources, what the keys say about the shift (shifted, shift_place,
    shift_every)."""
    if source not in SOURCES:
        raise ConvertError(f"unknown source {source!r} (known: {', '.join(SOURCES)})")
    state = strip_prefix(state)
    p = _Parsed(source)
    _PARSERS[source](state, p)
    if p.unknown:
        shown = ', '.join(p.unknown[:8]) + (' ...' if len(p.unknown) > 8 else '')
        raise ConvertError(f"{len(p.unknown)} key(s) are not {source} ResNet-TSM weights "
                           f"(non-local, temporal-pool and PP-TSM variants are not "
                           f"supported): {shown}")
    if ('fc', 'w') not in p.arrays or ('stem', 'weights') not in p.arrays:
        raise ConvertError(f"not a {source} ResNet-TSM checkpoint: no stem conv or no FC "
                           f"weight among its {len(state)} keys")
    depth = _depth(p)
    out = {}
    for (unit, param), v in p.arrays.items():
        v = np.asarray(v)
        if unit == 'fc':
            if param == 'w' and source in _TORCH_LAYOUT:
                v = v.T  # torch Linear [out, in] -> paddle [in, out]
            out['fc_0.w_0' if param == 'w' else 'fc_0.b_0'] = np.ascontiguousarray(v)
            continue
        if unit == 'stem':
            name = 'conv1'
        else:
            name = f"{block_name(unit[0], unit[1], depth)}_branch{unit[2]}"
        if param == 'weights':
            out[f"{name}_weights"] = v
        else:
            bn = 'bn_conv1' if name == 'conv1' else 'bn' + name[3:]
            out[f"{bn}_{param}"] = v
    info = {'num_layers': depth, 'num_classes': int(out['fc_0.w_0'].shape[1])}
    if source in _TORCH_LAYOUT:
        if len(p.places) > 1:
            raise ConvertError(f"{source} weights mix 'block' and 'blockres' shifts")
        info['shifted'] = bool(p.shifted)
        info['shift_place'] = p.places.pop() if p.places else 'blockres'
        info['shift_every'] = _shift_every(p) if p.shifted else 1
    return out, info


def to_arrays(state, source):
    """Source-named arrays -> (arrays, info): fluid-named for a ResNet (to_fluid), this
    project's keys for MIT's MobileNetV2 (info['backbone'] 'mobilenetv2', with the shift
    as its keys show it: shifted, shift_place, shift_every)."""
    from . import convert_mobilenet as mbv2
    state = strip_prefix(state)
    if source not in ('mit', 'mit_online') or (source == 'mit' and not mbv2.is_mobilenet(state)):
        return to_fluid(state, source)
    arrays, info = mbv2.to_model_state(state, source)
    info.update(shifted=mbv2.check_shifted(info['shifted'], source), shift_place='blockres',
                shift_every=1)
    return arrays, info


def _check_div(shift_div, backbone='resnet'):
    """The torch sources shift fold = C // shift_div channels each way (2*fold in all);
    the paddle op, which this project's shift follows, cuts at int(C*r) and int(2*C*r).
    Accept a shift_div only where both agree on every channel count of the backbone."""
    from .mobilenet_v2 import block_specs
    if not isinstance(shift_div, int) or shift_div < 2:
        raise ConvertError(f"shift_div must be an integer >= 2, got {shift_div!r}")
    channels = ({a for a, _, _, _ in block_specs()} if backbone == 'mobilenetv2' else
                {w * k for w in STAGE_WIDTHS for k in (1, 2, 4)})
    for c in sorted(channels):
        if fold_sizes(c, 1.0 / shift_div) != (c // shift_div, 2 * (c // shift_div)):
            raise ConvertError(f"shift_div {shift_div} splits {c} channels differently "
                               f"from the paddle op; not supported")


def source_options(source, info=None, shift_div=8, seg_num=8):
    """The model options under which `source` weights compute what they were trained to,
    plus what is known about them (source; num_layers or backbone, num_classes from
    to_arrays' info)."""
    meta = {'source': source}
    if info:
        meta.update({k: info[k] for k in ('num_layers', 'backbone', 'num_classes') if k in info})
    if source == 'mit_online':
        # online_demo/mobilenet_v2_tsm.py InvertedResidualWithShift: channels [0, c//8) of
        # frame t are frame t-1's (the shift buffer), before the expansion conv, the
        # shortcut unshifted; one frame in, its logits out
        return dict(shift_direction='backward', shift_ratio=0.125, shift_place='blockres',
                    shift_every=1, head='logit_mean', **meta)
    if source == 'modelzoo':
        # PaddleCV/video/models/tsm: fluid temporal_shift with ratio 1/8 before branch2a;
        # pool -> dropout(0.5, fluid default downgrade_in_infer) -> mean over T -> fc
        opts = dict(shift_direction='paddle', shift_ratio=0.125, shift_place='blockres',
                    shift_every=1, head='feature_mean', dropout=0.5)
    elif source == 'paddlevideo':
        # resnet_tsm.py BottleneckBlock: F.temporal_shift(inputs, num_seg, 1.0 / num_seg)
        # before conv0, shortcut unshifted; tsm_head.py: fc per frame, then mean over T
        opts = dict(shift_direction='paddle', shift_ratio=1.0 / seg_num, shift_place='blockres',
                    shift_every=1, head='logit_mean')
        meta['seg_num'] = seg_num
    else:
        # mit ops/temporal_shift.py / mmaction2 resnet_tsm.py: first fold from t+1, second
        # from t-1 ("mit"); consensus averages the per-frame logits
        _check_div(shift_div, (info or {}).get('backbone', 'resnet'))
        opts = dict(shift_direction='mit',
                    shift_ratio=1.0 / shift_div if info['shifted'] else 0.0,
                    shift_place=info['shift_place'], shift_every=info['shift_every'],
                    head='logit_mean')
        meta['shift_div'] = shift_div
    return dict(opts, **meta)


def shift_div_from_name(path, default=8):
    """MIT names its files `TSM_kinetics_RGB_resnet50_shift8_blockres_...`; its
    test_models.py reads shift_div from the `shiftN` part, and so does this."""
    m = re.search(r'(?:^|_)shift(\d+)(?:_|$)', os.path.basename(path))
    return int(m.group(1)) if m else default


def _torch_load(path):
    try:
        import torch
    except ImportError:
        raise ConvertError(f"{path} is a PyTorch checkpoint; reading it needs torch "
                           f"(pip install -r requirements-convert.txt)") from None
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 -- any failure of an outside file is a bad file
        raise ConvertError(f"cannot read {path} with torch.load: {e}") from None

    def plain(x):
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().float().numpy() if x.is_floating_point() \
                else x.detach().cpu().numpy()
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x
    return plain(obj)


def read_source(path):
    """A source file -> dict key -> ndarray.  Pickles of arrays (model zoo, PaddleVideo
    `.pdparams`, or PyTorch names saved as numpy) are read with the restricted unpickler;
    `.pth` files need torch."""
    if os.path.isdir(path) or not os.path.isfile(path):
        raise ConvertError(f"weights file not found: {path}")
    if is_torch_file(path):
        state, _ = arrays_of(_torch_load(path), path)
    else:
        state, _, _ = read_checkpoint(path)
    return state
