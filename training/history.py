"""What a training run records besides checkpoints: per-epoch metrics in history.json and,
when asked, VisualDL scalars."""
import json
import logging
import os

logger = logging.getLogger(__name__)


class History:
    """Per-epoch metrics in <save_dir>/history.json (for curves); on resume the epochs
    after the resumed one are dropped, so the file always matches the checkpoints."""

    def __init__(self, path, start_epoch):
        self.path, self.records = path, []
        if start_epoch > 0 and os.path.isfile(path):
            with open(path, encoding='utf-8') as f:
                self.records = [r for r in json.load(f) if r['epoch'] < start_epoch]

    def add(self, record):
        self.records.append(record)
        tmp = self.path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(self.records, f, indent=1)
        os.replace(tmp, self.path)


def visualdl_writer(args, cfg, rank):
    if rank != 0 or not (args.use_visualdl or cfg.TRAIN.use_visualdl):
        return None
    try:
        from visualdl import LogWriter
    except ImportError:
        logger.warning("visualdl is not installed: no VisualDL logs (pip install visualdl)")
        return None
    logdir = os.path.join(args.save_dir, 'vdl')
    logger.info("VisualDL logs in %s (visualdl --logdir %s)", logdir, logdir)
    return LogWriter(logdir=logdir)


def log_scalars(writer, tag, stats, step):
    if writer is not None:
        for key in ('loss', 'top1', 'top5'):
            writer.add_scalar(f"{tag}/{key}", stats[key], step)
