"""Command-line flags of the entry scripts (the original's names), config loading, and
the body every entry script shares (run_job)."""
import argparse
import ast
import logging
import sys

from utils.config_utils import apply_overrides, merge_configs, parse_config


def str2bool(text):
    """The original parsed True/False as Python literals; accept the usual spellings too."""
    low = str(text).strip().lower()
    if low in ('true', '1', 'yes', 'y'):
        return True
    if low in ('false', '0', 'no', 'n'):
        return False
    try:
        return bool(ast.literal_eval(text))
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"expected True or False, got '{text}'") from None


def base_parser(description, save_dir):
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--model_name', default='TSM', help='registered model name (case-insensitive)')
    p.add_argument('--config', default='configs/tsm.yaml', help='path to the YAML config')
    p.add_argument('--batch_size', type=int, default=None, help='overrides the config (global)')
    p.add_argument('--use_gpu', type=str2bool, default=None, help='True/False; default: config')
    p.add_argument('--save_dir', default=save_dir, help='where outputs go')
    p.add_argument('--log_interval', type=int, default=10, help='iterations between log lines')
    p.add_argument('--cpu_threads', type=int, default=0,
                   help='CPU threads for Paddle (0: every available core)')
    p.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value',
                   help='override any config key; repeatable')
    return p


def add_engine_flags(p, backend, precision):
    """--backend and --precision (inference_model.py; add_inference_flags)."""
    from engines import BACKENDS, PRECISIONS
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


def load_config(args, section, flags):
    """Config file, then the flags of `section` (None: not given), then -o overrides."""
    cfg = parse_config(args.config)
    merge_configs(cfg, section, flags)
    apply_overrides(cfg, args.override)
    return cfg


def fail(message, code=2):
    """One line on stderr and a non-zero exit: the way bad input ends a run."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def run_job(name, args, section, flags, job):
    """What train.py, eval.py, predict.py and inference_model.py do once their flags are
    parsed: logging, the config (file, then `flags` into `section`, then -o), then
    job(args, cfg), whose result is returned.  A user's mistake ends in one line and exit
    2; an interrupted training (it saved a checkpoint) or Ctrl-C in exit 130."""
    from utils.logger import setup_logging
    setup_logging()
    from utils.jobs import USER_ERRORS, Interrupted
    try:
        return job(args, load_config(args, section, flags))
    except USER_ERRORS as e:
        logging.getLogger(name).debug('failed', exc_info=True)
        fail(e.args[0] if e.args else e)
    except Interrupted as e:
        fail(e.args[0], 130)
    except KeyboardInterrupt:
        fail('interrupted' + (' before a checkpoint could be saved' if name == 'train' else ''),
             130)
