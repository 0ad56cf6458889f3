"""The one evaluation (train.py's validation and eval.py) and prediction (predict.py):
every video of a loader through the model, its views averaged."""
import logging
import sys

import numpy as np
import paddle

from metrics import AccuracyMeter, average_views, nll
from training.loader import resilient_batches
from training.loop import Amp

logger = logging.getLogger(__name__)


@paddle.no_grad()
def evaluate(model, loader, log_interval=0, desc='eval', amp=None, meter=None):
    """Top-1/top-5/loss over every video of the loader (over every rank's shard), under
    training's autocast (`amp`) when given.
    -> {'top1', 'top5', 'loss', 'num_videos', 'num_failed', 'mean_class_acc'}; pass
    `meter` to keep the confusion matrix."""
    model.eval()
    amp = amp or Amp()
    meter = meter if meter is not None else AccuracyMeter()
    for it, batch in progress(resilient_batches(loader), desc, len(loader)):
        if batch['paths']:
            with amp.autocast():
                logp = video_log_probs(model, batch['imgs'], views_average(loader))
            labels = batch['labels'].numpy()
            meter.update(logp, labels, nll(logp, labels), int(batch['failed']))
        else:
            meter.add_failed(int(batch['failed']))
        if log_interval and it % log_interval == 0:
            logger.info("[%s] iter %d/%d", desc.upper(), it, len(loader))
    return meter.merge_ranks().result()


def views_average(loader):
    """How the dataset's views are merged: its section's `average` ('prob' or 'logit')."""
    return loader.dataset.average


def video_log_probs(model, imgs, average='prob'):
    """imgs [B, T, 3L, H, W], or [B, V, T, 3L, H, W] with V views of each video
    -> numpy float64 log-probabilities [B, K], the views averaged (metrics.average_views)."""
    views = 1
    if imgs.ndim == 6:
        b, views = imgs.shape[:2]
        imgs = imgs.reshape([b * views, *imgs.shape[2:]])  # -> [B*V, T, 3L, H, W]
    logits = model(imgs).astype('float32').numpy()
    return average_views(logits.reshape([-1, views, logits.shape[-1]]), average)


@paddle.no_grad()
def predict(model, loader, topk=5):
    """-> (records, failed): per video {'path', 'index' (of the dataset item),
    'top_indices', 'top_probs'}, and the count of videos that failed to decode."""
    model.eval()
    records, failed = [], 0
    for _, batch in progress(resilient_batches(loader), 'predict', len(loader)):
        failed += int(batch['failed'])
        if not batch['paths']:
            continue
        probs = np.exp(video_log_probs(model, batch['imgs'], views_average(loader)))
        order = np.argsort(-probs, axis=1)[:, :topk]
        for path, item, idx, p in zip(batch['paths'], batch['indices'], order, probs):
            records.append({'path': path, 'index': int(item), 'top_indices': [int(i) for i in idx],
                            'top_probs': [float(p[i]) for i in idx]})
    return records, failed


def progress(iterable, desc, total=None):
    """A tqdm bar on a terminal, the plain iterable otherwise."""
    if not sys.stderr.isatty():
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False)
