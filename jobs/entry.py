"""What every entry script does once its flags are parsed (run_job), the engine flags of
the inference scripts, and the errors that end a run with one line.  Light at import (the
flags are read before --help answers): the project's heavy modules load in run_job."""
import logging

from engines import BACKENDS, PRECISIONS
from utils.cli import fail, load_config, str2bool
from utils.logger import setup_logging


def user_errors():
    """The project's own errors, which end a run with one line instead of a traceback;
    any other exception is a bug and keeps its traceback.  (Interrupted: run_job.)"""
    from engines import EngineError
    from models import RegistryError, WeightsError
    from reader import ListFileError
    from reader.inputs import InputError
    from training.loader import LoaderError
    from training.loop import TrainingError
    from utils.config_utils import ConfigError
    from utils.download import DownloadError
    from utils.env import EnvError
    return (ConfigError, WeightsError, DownloadError, ListFileError, RegistryError,
            InputError, EnvError, EngineError, TrainingError, LoaderError)


def add_engine_flags(p, backend, precision):
    """--backend and --precision (inference_model.py; add_inference_flags)."""
    p.add_argument('--backend', choices=BACKENDS, default=backend,
                   help='inference engine: paddle (Paddle Inference + oneDNN), openvino, '
                        'onnxruntime (both through paddle2onnx), or auto: the fastest one '
                        f'installed for the precision (engines/__init__.py); default: {backend}')
    p.add_argument('--precision', choices=PRECISIONS, default=precision,
                   help='fp32; bf16 (needs AVX512-BF16 or AMX, else fp32; ONNX Runtime runs '
                        'fp32); int8 (a model quantized by tools/quantize.py); default: ' +
                        (precision or 'bf16 on CPUs with AVX512-BF16 or AMX, else fp32'))


def add_inference_flags(p, precision=None):
    """eval.py / predict.py / serve.py: which engine runs the model, in which precision
    (None: bf16 where the CPU has it, else fp32)."""
    p.add_argument('--use_inference', type=str2bool, default=None,
                   help='True: run the model through an inference engine (--backend), exported '
                        'on first use and cached ($TSM_PADDLE_CACHE, default '
                        '~/.cache/tsm_paddle); False: the eager model (fp32); default: True '
                        'on the CPU')
    add_engine_flags(p, 'auto', precision)


def run_job(name, args, section, flags, job):
    """What train.py, eval.py, predict.py and inference_model.py do once their flags are
    parsed: logging, the config (file, then `flags` into `section`, then -o), then
    job(args, cfg), whose result is returned.  A user's mistake ends in one line and exit
    2; an interrupted training (it saved a checkpoint) or Ctrl-C in exit 130."""
    setup_logging()
    from training.stop import Interrupted
    try:
        return job(args, load_config(args, section, flags))
    except user_errors() as e:
        logging.getLogger(name).debug('failed', exc_info=True)
        fail(e.args[0] if e.args else e)
    except Interrupted as e:
        fail(e.args[0], 130)
    except KeyboardInterrupt:
        fail('interrupted' + (' before a checkpoint could be saved' if name == 'train' else ''),
             130)
