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
    amp = Amp(cfg.TRAIN.amp, cfg.TRAIN.amp_level, cfg.TRAIN.amp_dtype)
    check_amp(amp)
    seed = 0 if args.fix_random_seed else random.randrange(2 ** 31)
    seed = ranks.from_rank0(seed)  # one seed for the run; each rank's dropout differs by rank
    env.seed_everything(seed)  # the model's initialisation (rank 0's is sent to every rank)
    model = get_model(args.model_name, cfg, 'train')
    train_loader = build_loader(get_reader(args.model_name, 'train', cfg),
                                per_device_batch(cfg.TRAIN.batch_size, world),
                                cfg.TRAIN.num_reader_threads, rank, world, shuffle=True)
    valid_loader = None
    if args.valid_interval > 0:
        valid_loader = build_loader(get_reader(args.model_name, 'valid', cfg),
                                    per_device_batch(cfg.VALID.batch_size, world),
                                    cfg.VALID.num_reader_threads, rank, world)
    steps = len(train_loader)
    optimizer, lr_sched = build_optimizer(model, cfg, steps)
    scaler = amp.scaler()
    start_epoch, start_iter, seed = init_weights(model, optimizer, scaler, args, steps, seed,
                                                 ranks, keep=explicit_keys(cfg, 'MODEL'))
    if amp.enabled and amp.level == 'O2':
        model, optimizer = paddle.amp.decorate(models=model, optimizers=optimizer, level='O2',
                                               dtype=amp.dtype)
    net = paddle.DataParallel(model) if world > 1 else model
    writer = visualdl_writer(args, cfg, rank)
    os.makedirs(args.save_dir, exist_ok=True)
    name = args.model_name.upper()
    history = History(os.path.join(args.save_dir, 'history.json'), start_epoch)

    def save(epoch, next_iter):
        """Checkpoint after `next_iter` batches of `epoch` (all of them: epoch end).  Every
        rank calls it at the same step; rank 0 writes."""
        bad = [n for n, p in model.named_parameters()
               if not bool(paddle.isfinite(p).all())]
        if bad:  # the same weights on every rank: every rank stops here, with this line
            raise TrainingError(f"weights became non-finite at epoch {epoch} iteration "
                                f"{next_iter - 1} ({bad[0]}, ...); stopping, the last saved "
                                f"checkpoint is untouched")
        done = next_iter >= steps
        prefix = os.path.join(args.save_dir, f"{name}_epoch{epoch}" +
                              ('' if done else f"_iter{next_iter}"))

        def write():
            checkpoint.save_checkpoint(prefix, model, optimizer, epoch=epoch,
                                       next_iter=next_iter, steps_per_epoch=steps,
                                       step=lr_sched.last_epoch, seed=seed,
                                       scaler=scaler.state_dict(), config=to_plain(cfg))
            checkpoint.remove_partial(args.save_dir, name, keep=prefix)
        on_rank0(ranks, f"checkpoint {prefix}", write)
        return prefix

    with StopRequest() as stop:
        def after_step(epoch, it):
            if args.save_interval_iters and (it + 1) % args.save_interval_iters == 0 \
                    and it + 1 < steps:
                save(epoch, it + 1)

        for epoch in range(start_epoch, cfg.TRAIN.epoch):
            set_loader_epoch(train_loader, epoch, seed)
            meter, next_iter = train_one_epoch(
                net, train_loader, optimizer, lr_sched, epoch, args.log_interval,
                start_iter if epoch == start_epoch else 0, seed, amp, scaler, after_step,
                ranks, stop.asked)
            if next_iter < steps:  # stopped by a signal
                prefix = save(epoch, next_iter)
                raise Interrupted(f"interrupted at epoch {epoch}, iteration {next_iter}: saved "
                                  f"{prefix}; continue with --resume {prefix}")
            stats = meter.merge_ranks().result()
            report_failures(stats, 'training', cfg.TRAIN.filelist, epoch)
            logger.info("[TRAIN] Epoch %d done: loss %.5f, top1 %.4f, top5 %.4f", epoch,
                        stats['loss'], stats['top1'], stats['top5'])
            save(epoch, steps)
            log_scalars(writer, 'train', stats, epoch)
            epoch_record = {'epoch': epoch, 'train': stats}
            if valid_loader is not None and (epoch + 1) % args.valid_interval == 0:
                ranks.buffers_from_rank0(model)  # evaluate what the checkpoint holds
                val = evaluate(net, valid_loader, desc='valid', amp=amp)
                report_failures(val, 'validation', cfg.VALID.filelist)
                logger.info("[VALID] Epoch %d: loss %.5f, top1 %.4f, top5 %.4f (%d videos)",
                            epoch, val['loss'], val['top1'], val['top5'], val['num_videos'])
                log_scalars(writer, 'valid', val, epoch)
                epoch_record['valid'] = val
            on_rank0(ranks, history.path, lambda: history.add(epoch_record))
            if stop.requested(ranks) and epoch + 1 < cfg.TRAIN.epoch:  # came in the last step
                prefix = os.path.join(args.save_dir, f"{name}_epoch{epoch}")
                raise Interrupted(f"interrupted after epoch {epoch}: saved {prefix}; continue "
                                  f"with --resume {prefix}")
    final = os.path.join(args.save_dir, f"{name}.pdparams")
    on_rank0(ranks, final, lambda: checkpoint.save_weights(model, final))
    logger.info("saved final weights to %s", final)
    if writer is not None:
        writer.close()
