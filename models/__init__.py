"""The networks and their weights: the model registry (`get_model(name, cfg, mode)`),
ResNet/MobileNetV2 TSM with the temporal shift and its export formulations, the per-frame
online model, and weight files of every source (load_weights, convert).

May import: utils."""
from utils.config_utils import mode_section

from . import tsm  # noqa: F401  (registers TSM)
from .registry import RegistryError, known_models, lookup, register  # noqa: F401
from .weights import WeightsError, load_pretrain, load_weights  # noqa: F401


def get_model(name, cfg, mode='train'):
    """Build the registered model `name` from cfg; mode is train/valid/test/infer."""
    mode_section(mode)
    model = lookup(name).from_config(cfg)
    model.train() if mode == 'train' else model.eval()
    return model
