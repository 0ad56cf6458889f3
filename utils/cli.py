"""Command-line flags every entry script shares (the original's names), config loading,
and the one-line exit of a user's mistake."""
import argparse
import ast
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
