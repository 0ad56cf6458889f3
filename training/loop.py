"""The one training loop (train.py), its optimizer, mixed precision and per-step seeds."""
import logging
import math
import time

import paddle
import paddle.nn.functional as F

from metrics import AccuracyMeter
from training.loader import resilient_batches
from training.ranks import Ranks
from utils.env import EnvError

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, no video decodes); one-line message."""


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
    are no-ops when disabled).  float16 needs loss scaling; bfloat16 does not.  Training
    and evaluation run under the same autocast."""

    def __init__(self, enabled=False, level='O1', dtype='float16'):
        self.enabled, self.level, self.dtype = enabled, level, dtype

    def autocast(self):
        return paddle.amp.auto_cast(enable=self.enabled, level=self.level, dtype=self.dtype)

    def scaler(self):
        use = self.enabled and self.dtype == 'float16'
        return paddle.amp.GradScaler(enable=use, init_loss_scaling=2.0 ** 15)


def check_amp(amp):
    """Paddle's auto_cast only acts on a GPU: on the CPU it warns and computes in float32
    (the losses equal float32's to the last digit), so AMP there would be a promise the
    run does not keep."""
    if amp.enabled and paddle.get_device().startswith('cpu'):
        raise EnvError("TRAIN.amp needs a GPU: Paddle's auto_cast does nothing on the CPU "
                           "(training would run in float32); set TRAIN.amp: false (bfloat16 "
                           "inference on the CPU: eval.py/predict.py --precision bf16)")


def step_seed(seed, epoch, it, rank=0):
    """Dropout's randomness of one step depends on (seed, epoch, step, rank) only, so a
    run resumed anywhere repeats the uninterrupted run exactly."""
    return (seed * 1000003 + epoch * 10007 + it + rank * 7919) % (2 ** 31)


def placeholder_loss(model, shape):
    """A loss with zero gradients for a rank whose batch has no video: the rank still
    runs backward, so it joins the gradient all-reduce of the step like every other
    rank.  In eval mode, so the batch norms' running statistics stay untouched."""
    model.eval()
    loss = model(paddle.zeros([1, *shape], dtype='float32')).astype('float32').sum() * 0.0
    model.train()
    return loss


def train_one_epoch(model, loader, optimizer, lr_sched, epoch, log_interval=10, start_iter=0,
                    seed=0, amp=None, scaler=None, after_step=None, ranks=None,
                    stop_asked=None):
    """Train on batches start_iter.. of the epoch.

    Every rank takes the same collective steps whatever fails: a rank whose batch had no
    video that decoded still runs a zero-gradient backward (placeholder_loss); before the
    backward, one all-reduce (Ranks.step_status) tells every rank the number of real
    videos and which ranks' losses were not finite, and after the step another whether a
    rank was asked to stop (`stop_asked()`, e.g. by SIGTERM).  The loss is the mean over the step's real videos
    on all ranks: each rank's sum over its videos, times world / videos because
    DataParallel averages the ranks' gradients.  A step with no video on any rank is
    skipped everywhere (the LR schedule still counts it).
    `after_step(epoch, it)` runs after each step (checkpoints).
    -> (AccuracyMeter of the epoch with failures counted, index of the next batch; less
    than len(loader) when stopped)"""
    model.train()
    amp, ranks = amp or Amp(), ranks or Ranks()
    meter, speed = AccuracyMeter(), Throughput()
    n_iter, next_iter = len(loader), start_iter
    tic = time.time()
    for it, batch in resilient_batches(loader, start_iter):
        reader_cost = time.time() - tic
        next_iter = it + 1
        videos = len(batch['paths'])
        paddle.seed(step_seed(seed, epoch, it, ranks.rank))
        if videos:
            labels = batch['labels']
            with amp.autocast():
                logits = model(batch['imgs'])
                loss_sum = F.cross_entropy(logits.astype('float32'), labels.unsqueeze(-1),
                                           reduction='sum')
            loss_value = float(loss_sum) / videos
        elif ranks.distributed:
            with amp.autocast():
                loss_sum = placeholder_loss(model, loader.dataset.clip_shape)
            loss_value = 0.0
        status = ranks.step_status(videos, math.isfinite(loss_value if videos else 0.0))
        if status.nonfinite_ranks:
            where = (f" on rank {', '.join(map(str, status.nonfinite_ranks))}"
                     if ranks.distributed else '')
            what = 'not finite' if ranks.distributed else loss_value
            raise TrainingError(f"loss is {what} at epoch {epoch} iteration {it}{where}; "
                                f"stopping (the last saved checkpoint is untouched)")
        if status.videos:
            loss = loss_sum * (ranks.world / status.videos)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            optimizer.clear_grad()
        lr = optimizer.get_lr()
        lr_sched.step()  # the schedule counts every step, skipped ones too
        if videos:
            top1, top5 = meter.update(logits.astype('float32').numpy(), labels.numpy(),
                                      loss_value, int(batch['failed']))
            speed.add(reader_cost, time.time() - tic, videos)
            if log_interval and (it % log_interval == 0 or it == n_iter - 1):
                logger.info("[TRAIN] Epoch %d, iter %d/%d, loss: %.5f, top1: %.4f, top5: %.4f, "
                            "lr: %.6f, %s", epoch, it, n_iter, loss_value, top1, top5, lr,
                            speed.line())
                speed.reset()
        else:
            meter.add_failed(int(batch['failed']))
            if log_interval and (it % log_interval == 0 or it == n_iter - 1):
                logger.info("[TRAIN] Epoch %d, iter %d/%d: no video of this batch decoded "
                            "(%d failed)", epoch, it, n_iter, int(batch['failed']))
        if after_step is not None:
            after_step(epoch, it)
        if stop_asked is not None and ranks.any(stop_asked()):  # after the step, as asked
            break
        tic = time.time()
    return meter, next_iter


def report_failures(stats, what, filelist, epoch=None):
    """Every video failed: stop.  Some failed: say how many (each was logged by name)."""
    when = f" in epoch {epoch}" if epoch is not None else ''
    if stats['num_videos'] == 0:
        raise TrainingError(f"every video of {filelist} failed to decode{when} "
                            f"({stats['num_failed']} tried); check the list and the files")
    if stats['num_failed']:
        logger.warning("%d of %d videos failed to decode during %s%s (skipped, named above)",
                       stats['num_failed'], stats['num_failed'] + stats['num_videos'], what, when)
