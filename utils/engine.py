"""The one training loop and the one evaluation, shared by train.py, eval.py and predict.py."""
import itertools
import logging
import math
import time

import numpy as np
import paddle
import paddle.nn.functional as F

from metrics import AccuracyMeter, average_views, nll
from reader import collate
from utils.env import available_cpus

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, no video decodes); one-line message."""


class ShardSampler(paddle.io.Sampler):
    """Indices rank, rank+world, ...: every video exactly once over all ranks, no padding
    (DistributedBatchSampler pads with repeats, which would bias evaluation)."""

    def __init__(self, size, rank=0, world=1):
        super().__init__()
        self.indices = list(range(rank, size, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class ResumableBatches(paddle.io.BatchSampler):
    """Wraps a batch sampler so an epoch can start after its first `skip` batches (resume
    in the middle of an epoch, restart after a worker died) without decoding them."""

    def __init__(self, inner):  # no super().__init__: everything is delegated to `inner`
        self.inner, self.skip = inner, 0

    def __iter__(self):
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self):
        return len(self.inner)

    def set_epoch(self, epoch):
        if hasattr(self.inner, 'set_epoch'):
            self.inner.set_epoch(epoch)


def prefetch_batches(buf_size, batch_size, workers, views=1, most=8):
    """Batches each worker may read ahead: the config's buf_size (clips buffered between
    reader and model, as in the original) shared out, between 2 (Paddle's default) and
    `most`.  The loader hands batches over in order, so one slow video (a long or large
    file) stalls the others once they are this far ahead; bench/reader.py measured 2
    workers at 1.60-1.81x one worker with 2, 1.88-2.01x with 8 (clips of 0.04-1.6 s)."""
    if not buf_size or workers <= 0:
        return 2
    return max(2, min(most, int(buf_size) // (batch_size * workers * max(1, views))))


def build_loader(dataset, batch_size, num_workers, rank=0, world=1, shuffle=False):
    """Training (shuffle=True): a DistributedBatchSampler, each rank its own shard.
    Evaluation: each rank a disjoint shard, the last partial batch kept.  Workers read
    ahead as the dataset's buf_size, shared among the ranks, allows (prefetch_batches)."""
    workers = max(0, min(num_workers, available_cpus()))
    if shuffle:
        sampler = paddle.io.DistributedBatchSampler(dataset, batch_size=batch_size,
                                                    num_replicas=world, rank=rank,
                                                    shuffle=True, drop_last=False)
    else:
        sampler = paddle.io.BatchSampler(sampler=ShardSampler(len(dataset), rank, world),
                                         batch_size=batch_size, drop_last=False)
    # the original's buffer fed every device of the machine: one share per rank
    prefetch = prefetch_batches((getattr(dataset, 'buf_size', 0) or 0) // max(1, world),
                                batch_size, workers, getattr(dataset, 'num_views', 1))
    return paddle.io.DataLoader(dataset, batch_sampler=ResumableBatches(sampler),
                                num_workers=workers, collate_fn=collate,
                                use_shared_memory=workers > 0, prefetch_factor=prefetch)


def resilient_batches(loader, start=0, max_restarts=5):
    """Yield (index, batch) from batch `start` on.  When a worker process dies (a decoder
    crashed, or was ended by its hard deadline), the workers are restarted after the
    batch being read, which is lost and counted; more than `max_restarts` is an error."""
    pos, restarts, sampler = start, 0, loader.batch_sampler
    while pos < len(loader):
        sampler.skip = pos
        try:
            for batch in loader:
                yield pos, batch
                pos += 1
            return
        except (SystemError, RuntimeError) as e:  # how Paddle reports a dead worker
            text = str(e)
            if 'Blocking queue is killed' not in text and 'worker' not in text.lower():
                raise
            restarts += 1
            if restarts > max_restarts:
                raise TrainingError(f"data loader workers died {restarts} times; stopping "
                                    f"(see the errors above)") from None
            logger.warning("a data loader worker died; restarting the workers after batch "
                           "%d, whose videos are counted as failed", pos)
            yield pos, {'paths': [], 'failed': np.array(sampler_batch_size(sampler)),
                        'labels': None, 'imgs': None}
            pos += 1
        finally:
            sampler.skip = 0


def sampler_batch_size(sampler):
    inner = getattr(sampler, 'inner', sampler)
    return getattr(inner, 'batch_size', 1)


def set_loader_epoch(loader, epoch, seed):
    """Reshuffle and reseed the data of `epoch` (before iterating the loader)."""
    if hasattr(loader.batch_sampler, 'set_epoch'):
        loader.batch_sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch, seed)


def build_optimizer(model, cfg, steps_per_epoch):
    """Momentum with L2 on every parameter but the FC bias (its ParamAttr says so), and a
    piecewise LR whose boundaries are the decay epochs in real steps."""
    t = cfg.TRAIN
    boundaries = [int(e * steps_per_epoch) for e in t.decay_epochs]
    values = [t.learning_rate * t.learning_rate_decay ** i for i in range(len(boundaries) + 1)]
    lr = paddle.optimizer.lr.PiecewiseDecay(boundaries=boundaries, values=values)
    opt = paddle.optimizer.Momentum(learning_rate=lr, momentum=t.momentum,
                                    parameters=model.parameters(),
                                    weight_decay=paddle.regularizer.L2Decay(t.l2_weight_decay))
    return opt, lr


class Throughput:
    """reader_cost / batch_cost / ips averaged since the last log line."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.reader = self.batch = 0.0
        self.samples = self.steps = 0

    def add(self, reader_cost, batch_cost, samples):
        self.reader += reader_cost
        self.batch += batch_cost
        self.samples += samples
        self.steps += 1

    def line(self):
        n = max(self.steps, 1)
        return (f"reader_cost: {self.reader / n:.4f} s, batch_cost: {self.batch / n:.4f} s, "
                f"ips: {self.samples / max(self.batch, 1e-9):.3f} clips/s")


class Amp:
    """Mixed precision settings: one code path for fp32 and AMP (auto_cast and GradScaler
    are no-ops when disabled).  float16 needs loss scaling; bfloat16 does not."""

    def __init__(self, enabled=False, level='O1', dtype='float16'):
        self.enabled, self.level, self.dtype = enabled, level, dtype

    def autocast(self):
        return paddle.amp.auto_cast(enable=self.enabled, level=self.level, dtype=self.dtype)

    def scaler(self):
        use = self.enabled and self.dtype == 'float16'
        return paddle.amp.GradScaler(enable=use, init_loss_scaling=2.0 ** 15)


def step_seed(seed, epoch, it):
    """Dropout's randomness of one step depends on (seed, epoch, step) only, so a run
    resumed anywhere repeats the uninterrupted run exactly."""
    return (seed * 1000003 + epoch * 10007 + it) % (2 ** 31)


def train_one_epoch(model, loader, optimizer, lr_sched, epoch, log_interval=10, start_iter=0,
                    seed=0, amp=None, scaler=None, after_step=None):
    """Train on batches start_iter.. of the epoch.  `after_step(epoch, it)` is called after
    each optimizer step and returns True to stop early (an interrupt).
    -> (AccuracyMeter of the epoch with failures counted, index of the next batch)"""
    model.train()
    amp = amp or Amp()
    meter, speed = AccuracyMeter(), Throughput()
    n_iter, next_iter = len(loader), start_iter
    tic = time.time()
    for it, batch in resilient_batches(loader, start_iter):
        reader_cost = time.time() - tic
        next_iter = it + 1
        if not batch['paths']:  # every video of the batch failed to decode
            meter.add_failed(int(batch['failed']))
            lr_sched.step()  # keep the schedule in real steps
            tic = time.time()
            continue
        labels = batch['labels']
        paddle.seed(step_seed(seed, epoch, it))
        with amp.autocast():
            logits = model(batch['imgs'])
            loss = F.cross_entropy(logits.astype('float32'), labels.unsqueeze(-1))
        loss_value = float(loss)
        if not math.isfinite(loss_value):
            raise TrainingError(f"loss is {loss_value} at epoch {epoch} iteration {it}; "
                                f"stopping (the last saved checkpoint is untouched)")
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.clear_grad()
        lr = optimizer.get_lr()
        lr_sched.step()
        top1, top5 = meter.update(logits.astype('float32').numpy(), labels.numpy(), loss_value,
                                  int(batch['failed']))
        speed.add(reader_cost, time.time() - tic, labels.shape[0])
        if log_interval and (it % log_interval == 0 or it == n_iter - 1):
            logger.info("[TRAIN] Epoch %d, iter %d/%d, loss: %.5f, top1: %.4f, top5: %.4f, "
                        "lr: %.6f, %s", epoch, it, n_iter, loss_value, top1, top5, lr,
                        speed.line())
            speed.reset()
        if after_step is not None and after_step(epoch, it):
            break
        tic = time.time()
    return meter, next_iter


@paddle.no_grad()
def evaluate(model, loader, log_interval=0, desc='eval', amp_level='O0', meter=None):
    """Top-1/top-5/loss over every video of the loader (over every rank's shard).
    -> {'top1', 'top5', 'loss', 'num_videos', 'num_failed', 'mean_class_acc'}; pass
    `meter` to keep the confusion matrix."""
    model.eval()
    meter = meter if meter is not None else AccuracyMeter()
    for it, batch in enumerate(progress(loader, desc)):
        labels = batch['labels']
        if batch['paths']:
            with paddle.amp.auto_cast(enable=amp_level != 'O0', level=amp_level):
                logp = video_log_probs(model, batch['imgs'], views_average(loader))
            labels = labels.numpy()
            meter.update(logp, labels, nll(logp, labels), int(batch['failed']))
        else:
            meter.add_failed(int(batch['failed']))
        if log_interval and it % log_interval == 0:
            logger.info("[%s] iter %d/%d", desc.upper(), it, len(loader))
    return meter.merge_ranks().result()


def views_average(loader):
    """How the dataset's views are merged: its section's `average` ('prob' or 'logit')."""
    return getattr(loader.dataset, 'average', 'prob')


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
    for batch in progress(loader, 'predict'):
        failed += int(batch['failed'])
        if not batch['paths']:
            continue
        probs = np.exp(video_log_probs(model, batch['imgs'], views_average(loader)))
        order = np.argsort(-probs, axis=1)[:, :topk]
        for path, item, idx, p in zip(batch['paths'], batch['indices'], order, probs):
            records.append({'path': path, 'index': int(item), 'top_indices': [int(i) for i in idx],
                            'top_probs': [float(p[i]) for i in idx]})
    return records, failed


def progress(iterable, desc):
    """A tqdm bar on a terminal, the plain iterable otherwise."""
    import sys
    if not sys.stderr.isatty():
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, leave=False)
