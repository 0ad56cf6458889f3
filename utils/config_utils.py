"""YAML configs with the original's UPPERCASE sections, checked against a schema.

`parse_config(path)` returns an `AttrDict` (``cfg.MODEL.seg_num`` and
``cfg['MODEL']['seg_num']`` both work, so does assignment).  Every key a config
may hold is listed in ``DEFAULTS`` below: an unknown section or key, or a value
of the wrong type, is a `ConfigError` whose one-line message names the key.
"""
import copy
import os
import re

import yaml

MODES = ('train', 'valid', 'test', 'infer')
SECTIONS = ('MODEL', 'TRAIN', 'VALID', 'TEST', 'INFER')


class ConfigError(ValueError):
    """A bad config file, key or value; the message is one line meant for users."""


class AttrDict(dict):
    """A dict whose keys are also attributes."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value

    def __deepcopy__(self, memo):
        out = AttrDict(copy.deepcopy(dict(self), memo))
        out.__dict__.update(copy.deepcopy(self.__dict__, memo))  # e.g. the explicit keys
        return out


_READER_DEFAULTS = {
    'short_size': 256,
    'target_size': 224,
    'num_reader_threads': 12,
    'buf_size': 1024,
    'batch_size': 16,
    'filelist': '',
    'video_timeout': 60.0,  # seconds to decode one video before it is skipped; 0: none
}

# Test-time protocol of VALID/TEST/INFER (see reader/sampling.py, reader/transforms.py):
# clips per video, dense (64-frame window) instead of segment sampling, crops per clip
# (1 centre, 3 along the long side, 10 corners+centre and flips), keep the aspect ratio
# when scaling the short side (else the original's forced 4:3), and what is averaged
# over the views ('prob': softmax then mean; 'logit': mean of the logits).
EVAL_DEFAULTS = {
    'num_clips': 1,
    'dense_sample': False,
    'num_crops': 1,
    'keep_ratio': False,
    'average': 'prob',
}

# Every known key with its default; the default's type is the key's type.
DEFAULTS = {
    'MODEL': {
        'name': 'TSM',
        'backbone': 'resnet',      # resnet (MODEL.num_layers deep) | mobilenetv2 (width 1.0)
        'format': 'mp4',
        'num_classes': 400,
        'seg_num': 8,
        'seglen': 1,
        'image_mean': [0.485, 0.456, 0.406],
        'image_std': [0.229, 0.224, 0.225],
        'num_layers': 50,
        'topk': 5,
        'shift_ratio': 0.125,
        'shift_direction': 'paddle',
        'shift_place': 'blockres',
        'head': 'feature_mean',
        'dropout': 0.5,
    },
    'TRAIN': dict(_READER_DEFAULTS, **{
        'epoch': 65,
        'batch_size': 128,
        'use_gpu': True,
        'num_gpus': 8,
        'learning_rate': 0.01,
        'learning_rate_decay': 0.1,
        'decay_epochs': [40, 60],
        'l2_weight_decay': 1e-4,
        'momentum': 0.9,
        'total_videos': 239781,
        'use_visualdl': False,
        'amp': False,              # mixed precision (GPU: float16; CPUs with AVX512-BF16: bfloat16)
        'amp_level': 'O1',
        'amp_dtype': 'float16',
    }),
    'VALID': dict(_READER_DEFAULTS, batch_size=128, **EVAL_DEFAULTS),
    'TEST': dict(_READER_DEFAULTS, **EVAL_DEFAULTS),
    'INFER': dict(_READER_DEFAULTS, batch_size=1, video_path='',
                  kinetics_labels='./data/kinetics400_label_list.txt', **EVAL_DEFAULTS),
}

# One line per key of DEFAULTS, for docs/config.md (python -m tools.config_doc): under
# 'SECTION.key' for a meaning of one section, else under 'key' for every section that has it.
HELP = {
    'MODEL.name': "registered model name (case-insensitive): `TSM`",
    'MODEL.backbone': "`resnet` (`num_layers` deep) or `mobilenetv2` (MIT's MobileNetV2, "
                      "width 1.0, the TSM paper's online model; `num_layers` unused): see "
                      "[mobilenetv2.md](mobilenetv2.md)",
    'MODEL.format': "source format of the list's videos: `mp4` (any container ffmpeg "
                    "decodes), `pkl` (the original's pickles) or `frames` (JPEG folders)",
    'MODEL.num_classes': "classes of the classifier (400: Kinetics-400)",
    'MODEL.seg_num': "segments (frames) per clip",
    'MODEL.seglen': "consecutive frames per segment (stacked as channels)",
    'MODEL.image_mean': "per-channel RGB mean (ImageNet's): a frame becomes "
                        "(x / 255 - mean) / std",
    'MODEL.image_std': "per-channel RGB standard deviation (ImageNet's), as above",
    'MODEL.num_layers': "ResNet depth: 18, 34 (basic blocks), 50, 101, 152",
    'MODEL.topk': "classes per record the server answers when a request names no `topk` "
                  "(predict.py prints `--infer_topk`)",
    'MODEL.shift_ratio': "fraction of channels shifted each way; 0 = TSN",
    'MODEL.shift_direction': "`paddle` (fold 0 from t-1, as Paddle's op), `mit` (fold 0 from "
                             "t+1, MIT/mmaction2 weights) or `backward` (one fold from t-1 "
                             "only: the online model); see [shift.md](shift.md)",
    'MODEL.shift_place': "shift the residual branch (`blockres`) or the block input (`block`)",
    'MODEL.head': "`feature_mean` (model zoo: dropout scaled at inference, mean over "
                  "segments, FC) or `logit_mean` (FC per frame, mean of the logits)",
    'MODEL.dropout': "dropout before the FC",
    'short_size': "scale the short side of every frame to this many pixels",
    'target_size': "then crop a square of this side (at most `short_size`)",
    'num_reader_threads': "DataLoader worker processes (capped at the CPU count)",
    'buf_size': "clips the loader may read ahead, as in the original: each worker "
                "prefetches 2-8 batches ([training.md](training.md#the-loaders-read-ahead))",
    'TRAIN.batch_size': "global batch, split across devices (`--batch_size`)",
    'batch_size': "videos per batch, each with all its views (`--batch_size`)",
    'filelist': "list file of videos, `path label` per line ([README](../README.md#data))",
    'video_timeout': "seconds to decode one video before it is skipped; 0: none (INFER: "
                     "the whole decode of a server request)",
    'TRAIN.epoch': "epochs to train (`--epoch`)",
    'TRAIN.use_gpu': "train on a GPU; on the CPU when there is none (`--use_gpu`)",
    'TRAIN.num_gpus': "informational: the device count is detected",
    'TRAIN.learning_rate': "learning rate for the global batch (`--learning_rate`)",
    'TRAIN.learning_rate_decay': "factor of the piecewise learning rate at each of "
                                 "`decay_epochs`",
    'TRAIN.decay_epochs': "epochs at which the learning rate is multiplied by "
                          "`learning_rate_decay`",
    'TRAIN.l2_weight_decay': "L2 decay of every parameter but the FC bias",
    'TRAIN.momentum': "momentum of the SGD optimizer",
    'TRAIN.total_videos': "informational: steps per epoch come from the list",
    'TRAIN.use_visualdl': "VisualDL logs in `<save_dir>/vdl` (`--use_visualdl`)",
    'TRAIN.amp': "mixed precision, GPU only: an error on the CPU, where Paddle's auto_cast "
                 "does nothing ([training.md](training.md#mixed-precision-trainamp))",
    'TRAIN.amp_level': "`O1` or `O2`: Paddle's auto_cast level",
    'TRAIN.amp_dtype': "`float16` (with loss scaling, saved in checkpoints) or `bfloat16` "
                       "(without)",
    'num_clips': "clips per video at test time ([protocols.md](protocols.md))",
    'dense_sample': "each clip `seg_num` frames 64 / `seg_num` apart in a 64-frame span "
                    "(MIT's dense sampling) instead of one frame per segment",
    'num_crops': "crops per clip: 1 (centre), 3 (along the long side) or 10 (4 corners and "
                 "centre, each flipped)",
    'keep_ratio': "keep the aspect ratio when scaling the short side (false: the "
                  "original's forced 4:3)",
    'average': "what is averaged over the views: `prob` (mean of the softmax, mmaction2) or "
               "`logit` (softmax of the mean logits, MIT)",
    'INFER.video_path': "predict this one video and ignore the list (`--video_path`)",
    'INFER.kinetics_labels': "class names: `idx name` or `name` per line, or JSON",
}

CHOICES = {
    ('MODEL', 'backbone'): ('resnet', 'mobilenetv2'),
    ('MODEL', 'format'): ('mp4', 'pkl', 'frames'),
    ('MODEL', 'num_layers'): (18, 34, 50, 101, 152),
    ('MODEL', 'shift_direction'): ('paddle', 'mit', 'backward'),
    ('MODEL', 'shift_place'): ('blockres', 'block'),
    ('MODEL', 'head'): ('feature_mean', 'logit_mean'),
    **{(s, 'num_crops'): (1, 3, 10) for s in ('VALID', 'TEST', 'INFER')},
    **{(s, 'average'): ('prob', 'logit') for s in ('VALID', 'TEST', 'INFER')},
    ('TRAIN', 'amp_level'): ('O1', 'O2'),
    ('TRAIN', 'amp_dtype'): ('float16', 'bfloat16'),
}
POSITIVE = {('MODEL', k) for k in ('num_classes', 'seg_num', 'seglen', 'topk')} | {
    (s, k) for s in SECTIONS[1:] for k in ('short_size', 'target_size', 'batch_size')} | {
    (s, 'num_clips') for s in ('VALID', 'TEST', 'INFER')}


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`)."""


_Loader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$'),
    list('-+0123456789.'))


def _type_ok(value, default):
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list)
    return isinstance(value, type(default))


def _type_name(default):
    return {bool: 'a boolean', float: 'a number', int: 'an integer', list: 'a list',
            str: 'a string'}.get(type(default), type(default).__name__)


def check_value(section, key, value, source):
    """Raise ConfigError unless SECTION.key may hold value; returns value (floats coerced)."""
    if section not in DEFAULTS:
        raise ConfigError(f"{source}: unknown section '{section}' (known: {', '.join(SECTIONS)})")
    if key not in DEFAULTS[section]:
        raise ConfigError(f"{source}: unknown key '{section}.{key}' "
                          f"(known: {', '.join(sorted(DEFAULTS[section]))})")
    default = DEFAULTS[section][key]
    if not _type_ok(value, default):
        raise ConfigError(f"{source}: '{section}.{key}' must be {_type_name(default)}, "
                          f"got {value!r}")
    if isinstance(default, float):
        value = float(value)
    choices = CHOICES.get((section, key))
    if choices and value not in choices:
        raise ConfigError(f"{source}: '{section}.{key}' must be one of {list(choices)}, "
                          f"got {value!r}")
    if (section, key) in POSITIVE and value <= 0:
        raise ConfigError(f"{source}: '{section}.{key}' must be positive, got {value!r}")
    return value


def _to_attr(d):
    return AttrDict({k: _to_attr(v) if isinstance(v, dict) else v for k, v in d.items()})


def parse_config(path):
    """Read a YAML config over the defaults; raise ConfigError naming the path or key."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding='utf-8') as f:
            raw = yaml.load(f, Loader=_Loader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f" line {mark.line + 1}" if mark else ''
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    cfg = copy.deepcopy(DEFAULTS)
    for section, values in raw.items():
        if section not in DEFAULTS:
            raise ConfigError(f"{path}: unknown section '{section}' (known: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section '{section}' must be a mapping")
        for key, value in values.items():
            cfg[section][key] = check_value(section, key, value, path)
    check_consistency(cfg, path)
    return _to_attr(cfg)


def check_consistency(cfg, source):
    """Checks that involve several keys."""
    model = cfg['MODEL']
    for key in ('image_mean', 'image_std'):
        vals = model[key]
        if len(vals) != 3 or not all(isinstance(v, (int, float)) for v in vals):
            raise ConfigError(f"{source}: 'MODEL.{key}' must be a list of 3 numbers")
    if any(v == 0 for v in model['image_std']):
        raise ConfigError(f"{source}: 'MODEL.image_std' must not contain 0")
    if not 0 <= model['shift_ratio'] < 0.5:  # Paddle's op needs 2 * ratio < 1
        raise ConfigError(f"{source}: 'MODEL.shift_ratio' must be in [0, 0.5)")
    if not 0 <= model['dropout'] < 1:
        raise ConfigError(f"{source}: 'MODEL.dropout' must be in [0, 1)")
    for section in SECTIONS[1:]:
        if cfg[section]['target_size'] > cfg[section]['short_size']:
            raise ConfigError(f"{source}: '{section}.target_size' must not exceed "
                              f"'{section}.short_size'")


def parse_override(text):
    """`SECTION.key=value` -> (SECTION, key, value parsed as YAML)."""
    if '=' not in text or '.' not in text.split('=', 1)[0]:
        raise ConfigError(f"override '{text}' must look like SECTION.key=value")
    name, value = text.split('=', 1)
    section, key = name.strip().split('.', 1)
    try:
        value = yaml.load(value, Loader=_Loader)
    except yaml.YAMLError:
        raise ConfigError(f"override '{text}': value is not valid YAML") from None
    return section.strip(), key.strip(), value


def merge_configs(cfg, section, overrides, source='command line'):
    """Set cfg[section][k] = v for every v that is not None (flag values); each is
    recorded as given explicitly."""
    for key, value in overrides.items():
        if value is not None:
            cfg[section][key] = check_value(section, key, value, source)
            mark_explicit(cfg, section, key)
    return cfg


def apply_overrides(cfg, overrides):
    """Apply a list of `SECTION.key=value` strings (the repeatable -o flag); each is
    recorded as given explicitly."""
    for text in overrides or ():
        section, key, value = parse_override(text)
        cfg[section][key] = check_value(section, key, value, f"-o {text}")
        mark_explicit(cfg, section, key)
    check_consistency(cfg, 'command line')
    return cfg


def mark_explicit(cfg, section, key):
    """Record that the user gave SECTION.key (a flag or -o), so that it beats values
    inferred later, such as the model options that weights carry.  An attribute, not a
    key: print_configs and to_plain never show it."""
    cfg.__dict__.setdefault('explicit', set()).add(f"{section}.{key}")


def explicit_keys(cfg, section):
    """The keys of `section` the user gave explicitly (flags, -o), as a set of names."""
    prefix = section + '.'
    return {name[len(prefix):] for name in cfg.__dict__.get('explicit', ())
            if name.startswith(prefix)}


def mode_section(mode):
    if mode not in MODES:
        raise ConfigError(f"unknown mode '{mode}' (known: {', '.join(MODES)})")
    return mode.upper()


def print_configs(cfg, title, logger):
    logger.info("---------------- %s arguments ----------------", title)
    for section in SECTIONS:
        if section in cfg:
            for key, value in cfg[section].items():
                logger.info("%s.%s: %s", section, key, value)
    logger.info("-------------------------------------------------")


def to_plain(cfg):
    """AttrDict -> plain dict, for saving beside checkpoints."""
    return {k: to_plain(v) if isinstance(v, dict) else copy.deepcopy(v) for k, v in cfg.items()}
