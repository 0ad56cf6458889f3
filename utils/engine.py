"""The one training loop and the one evaluation, shared by train.py, eval.py and predict.py."""
import logging
import math
import time

import numpy as np
import paddle
import paddle.nn.functional as F

from metrics import AccuracyMeter
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


def build_loader(dataset, batch_size, num_workers, rank=0, world=1, shuffle=False):
    """Training (shuffle=True): a DistributedBatchSampler, each rank its own shard.
    Evaluation: each rank a disjoint shard, the last partial batch kept."""
    workers = max(0, min(num_workers, available_cpus()))
    if shuffle:
        sampler = paddle.io.DistributedBatchSampler(dataset, batch_size=batch_size,
                                                    num_replicas=world, rank=rank,
                                                    shuffle=True, drop_last=False)
    else:
        sampler = paddle.io.BatchSampler(sampler=ShardSampler(len(dataset), rank, world),
                                         batch_size=batch_size, drop_last=False)
    return paddle.io.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                collate_fn=collate, use_shared_memory=workers > 0)


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


def train_one_epoch(model, loader, optimizer, lr_sched, epoch, log_interval=10,
                    scaler=None, amp_level='O0', on_step=None):
    """One pass over the loader; returns the epoch's AccuracyMeter (failures counted)."""
    model.train()
    meter, speed = AccuracyMeter(), Throughput()
    n_iter = len(loader)
    tic = time.time()
    for it, batch in enumerate(loader):
        reader_cost = time.time() - tic
        labels = batch['labels']
        if not batch['paths']:  # every video of the batch failed to decode
            meter.add_failed(int(batch['failed']))
            tic = time.time()
            continue
        with paddle.amp.auto_cast(enable=amp_level != 'O0', level=amp_level):
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
        top1, top5 = meter.update(logits.numpy().astype(np.float32), labels.numpy(), loss_value,
                                  int(batch['failed']))
        speed.add(reader_cost, time.time() - tic, labels.shape[0])
        if log_interval and (it % log_interval == 0 or it == n_iter - 1):
            logger.info("[TRAIN] Epoch %d, iter %d/%d, loss: %.5f, top1: %.4f, top5: %.4f, "
                        "lr: %.6f, %s", epoch, it, n_iter, loss_value, top1, top5, lr,
                        speed.line())
            speed.reset()
        if on_step is not None:
            on_step(epoch, it)
        tic = time.time()
    return meter


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
                logits = model(batch['imgs']).astype('float32')
            loss = F.cross_entropy(logits, labels.unsqueeze(-1))
            meter.update(logits.numpy(), labels.numpy(), float(loss), int(batch['failed']))
        else:
            meter.add_failed(int(batch['failed']))
        if log_interval and it % log_interval == 0:
            logger.info("[%s] iter %d/%d", desc.upper(), it, len(loader))
    return meter.merge_ranks().result()


@paddle.no_grad()
def predict(model, loader, topk=5):
    """-> (records, failed): per video {'path', 'top_indices', 'top_probs'}, and the count
    of videos that failed to decode."""
    model.eval()
    records, failed = [], 0
    for batch in progress(loader, 'predict'):
        failed += int(batch['failed'])
        if not batch['paths']:
            continue
        probs = F.softmax(model(batch['imgs']), axis=-1).numpy()
        order = np.argsort(-probs, axis=1)[:, :topk]
        for path, idx, p in zip(batch['paths'], order, probs):
            records.append({'path': path, 'top_indices': [int(i) for i in idx],
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
