"""Videos in, model inputs out: `get_reader(name, mode, cfg)` -> a paddle.io.Dataset, the
list files, the decoders, frame sampling and transforms, per-video deadlines, and what
predict.py reads besides a list (folders, windows, label names).

May import: utils, models."""
from models.registry import RegistryError
from utils.config_utils import mode_section

from .kinetics_reader import (KineticsReader, ListFileError, clip_shape, collate,  # noqa: F401
                              parse_list)
from .video_backends import VideoDecodeError, open_video  # noqa: F401

_READERS = {'TSM': KineticsReader}


def get_reader(name, mode, cfg, filelist=None, items=None):
    """The dataset of model `name` for `mode` (train/valid/test/infer)."""
    mode_section(mode)
    key = str(name).upper()
    if key not in _READERS:
        raise RegistryError(f"no reader for model '{name}' (known: {', '.join(sorted(_READERS))})")
    return _READERS[key](mode, cfg, filelist=filelist, items=items)
