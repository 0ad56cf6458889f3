"""train.py's job: the model, the loaders and the optimizer set up, the start point read
(training/resume.py), then the epochs of the one training loop, with a checkpoint after
each, validation every --valid_interval epochs, and a clean stop on SIGINT/SIGTERM."""
import logging
import os
import random
import sys

import paddle

from models import get_model
from reader import get_reader
from training import checkpoint
from training.checkpoint import on_rank0
from training.history import History, log_scalars, visualdl_writer
from training.loader import build_loader, per_device_batch
from training.loop import (Amp, TrainingError, build_optimizer, check_amp, report_failures,
                           set_loader_epoch, train_one_epoch)
from training.evaluate import evaluate
from training.ranks import Ranks
from training.resume import init_weights
from training.stop import Interrupted, StopRequest
from utils import env
from utils.config_utils import explicit_keys, print_configs, to_plain

logger = logging.getLogger(__name__)


def train_job(args, cfg):
    rank, world = env.setup_runtime(cfg, args)
    ranks = Ranks(rank, world)
    try:
        return _train(args, cfg, rank, world, ranks)
    except (TrainingError, Interrupted) as e:
        if not ranks.distributed:
            raise
        # raised by every rank at the same step: each says it before any ends, since
        # paddle.distributed.launch ends the others as soon as one has exited
        print(f"error: {e.args[0]}", file=sys.stderr, flush=True)
        ranks.wait_for_all()
        sys.exit(130 if isinstance(e, Interrupted) else 2)


def _train(args, cfg, rank, world, ranks):
    print_configs(cfg, 'Train', logger)
    run = TrainingRun(args, cfg, rank, world, ranks)
    with StopRequest() as stop:
        for epoch in range(run.start_epoch, cfg.TRAIN.epoch):
            run.epoch(epoch, stop)
    run.finish()


class TrainingRun:
    """One train.py run: set up (the seed, the model, the loaders, the optimizer, the start
    point), then its steps: an epoch (training, checkpoint, validation, history) and the
    end (the final weights).  Every rank takes the same steps in the same order."""

    def __init__(self, args, cfg, rank, world, ranks):
        self.args, self.cfg, self.ranks = args, cfg, ranks
        self.amp = Amp(cfg.TRAIN.amp, cfg.TRAIN.amp_level, cfg.TRAIN.amp_dtype)
        check_amp(self.amp)
        seed = 0 if args.fix_random_seed else random.randrange(2 ** 31)
        seed = ranks.from_rank0(seed)  # one seed for the run; each rank's dropout differs by rank
        env.seed_everything(seed)  # the model's initialisation (rank 0's is sent to every rank)
        self.model = get_model(args.model_name, cfg, 'train')
        self.train_loader, self.valid_loader = build_loaders(args, cfg, rank, world)
        self.steps = len(self.train_loader)
        self.optimizer, self.lr_sched = build_optimizer(self.model, cfg, self.steps)
        self.scaler = self.amp.scaler()
        self.start_epoch, self.start_iter, self.seed = init_weights(
            self.model, self.optimizer, self.scaler, args, self.steps, seed, ranks,
            keep=explicit_keys(cfg, 'MODEL'))
        if self.amp.enabled and self.amp.level == 'O2':
            self.model, self.optimizer = paddle.amp.decorate(
                models=self.model, optimizers=self.optimizer, level='O2', dtype=self.amp.dtype)
        self.net = paddle.DataParallel(self.model) if world > 1 else self.model
        self.writer = visualdl_writer(args, cfg, rank)
        os.makedirs(args.save_dir, exist_ok=True)
        self.name = args.model_name.upper()
        self.history = History(os.path.join(args.save_dir, 'history.json'), self.start_epoch)

    def epoch(self, epoch, stop):
        """Train one epoch, checkpoint it, validate it every --valid_interval epochs and
        add it to the history; Interrupted when a signal came in it."""
        stats = self.train_epoch(epoch, stop)
        report_failures(stats, 'training', self.cfg.TRAIN.filelist, epoch)
        logger.info("[TRAIN] Epoch %d done: loss %.5f, top1 %.4f, top5 %.4f", epoch,
                    stats['loss'], stats['top1'], stats['top5'])
        self.save(epoch, self.steps)
        log_scalars(self.writer, 'train', stats, epoch)
        record = {'epoch': epoch, 'train': stats}
        interval = self.args.valid_interval
        if self.valid_loader is not None and (epoch + 1) % interval == 0:
            record['valid'] = self.validate(epoch)
        on_rank0(self.ranks, self.history.path, lambda: self.history.add(record))
        if stop.requested(self.ranks) and epoch + 1 < self.cfg.TRAIN.epoch:  # in the last step
            prefix = os.path.join(self.args.save_dir, f"{self.name}_epoch{epoch}")
            raise Interrupted(f"interrupted after epoch {epoch}: saved {prefix}; continue "
                              f"with --resume {prefix}")

    def train_epoch(self, epoch, stop):
        """The epoch's steps (from the resumed iteration in the first) -> its statistics;
        stopped by a signal: a checkpoint of the batches done, then Interrupted."""
        set_loader_epoch(self.train_loader, epoch, self.seed)
        meter, next_iter = train_one_epoch(
            self.net, self.train_loader, self.optimizer, self.lr_sched, epoch,
            self.args.log_interval, self.start_iter if epoch == self.start_epoch else 0,
            self.seed, self.amp, self.scaler, self.after_step, self.ranks, stop.asked)
        if next_iter < self.steps:  # stopped by a signal
            prefix = self.save(epoch, next_iter)
            raise Interrupted(f"interrupted at epoch {epoch}, iteration {next_iter}: saved "
                              f"{prefix}; continue with --resume {prefix}")
        return meter.merge_ranks().result()

    def after_step(self, epoch, it):
        """A checkpoint every --save_interval_iters steps, but not at the epoch's end."""
        every = self.args.save_interval_iters
        if every and (it + 1) % every == 0 and it + 1 < self.steps:
            self.save(epoch, it + 1)

    def validate(self, epoch):
        self.ranks.buffers_from_rank0(self.model)  # evaluate what the checkpoint holds
        val = evaluate(self.net, self.valid_loader, desc='valid', amp=self.amp)
        report_failures(val, 'validation', self.cfg.VALID.filelist)
        logger.info("[VALID] Epoch %d: loss %.5f, top1 %.4f, top5 %.4f (%d videos)",
                    epoch, val['loss'], val['top1'], val['top5'], val['num_videos'])
        log_scalars(self.writer, 'valid', val, epoch)
        return val

    def save(self, epoch, next_iter):
        """Checkpoint after `next_iter` batches of `epoch` (all of them: epoch end).  Every
        rank calls it at the same step; rank 0 writes.  -> the checkpoint's prefix."""
        bad = [n for n, p in self.model.named_parameters()
               if not bool(paddle.isfinite(p).all())]
        if bad:  # the same weights on every rank: every rank stops here, with this line
            raise TrainingError(f"weights became non-finite at epoch {epoch} iteration "
                                f"{next_iter - 1} ({bad[0]}, ...); stopping, the last saved "
                                f"checkpoint is untouched")
        done = next_iter >= self.steps
        prefix = os.path.join(self.args.save_dir, f"{self.name}_epoch{epoch}" +
                              ('' if done else f"_iter{next_iter}"))

        def write():
            checkpoint.save_checkpoint(prefix, self.model, self.optimizer, epoch=epoch,
                                       next_iter=next_iter, steps_per_epoch=self.steps,
                                       step=self.lr_sched.last_epoch, seed=self.seed,
                                       scaler=self.scaler.state_dict(),
                                       config=to_plain(self.cfg))
            checkpoint.remove_partial(self.args.save_dir, self.name, keep=prefix)
        on_rank0(self.ranks, f"checkpoint {prefix}", write)
        return prefix

    def finish(self):
        """The final weights, <save_dir>/<NAME>.pdparams."""
        final = os.path.join(self.args.save_dir, f"{self.name}.pdparams")
        on_rank0(self.ranks, final, lambda: checkpoint.save_weights(self.model, final))
        logger.info("saved final weights to %s", final)
        if self.writer is not None:
            self.writer.close()


def build_loaders(args, cfg, rank, world):
    """The training loader (shuffled) and the validation one (None without validation),
    each rank reading its shard."""
    train_loader = build_loader(get_reader(args.model_name, 'train', cfg),
                                per_device_batch(cfg.TRAIN.batch_size, world),
                                cfg.TRAIN.num_reader_threads, rank, world, shuffle=True)
    valid_loader = None
    if args.valid_interval > 0:
        valid_loader = build_loader(get_reader(args.model_name, 'valid', cfg),
                                    per_device_batch(cfg.VALID.batch_size, world),
                                    cfg.VALID.num_reader_threads, rank, world)
    return train_loader, valid_loader
