"""The jobs behind train.py, eval.py and predict.py: set-up around the shared loops."""
import copy
import json
import logging
import os
import random
import signal
import sys

import numpy as np
import paddle

from metrics import AccuracyMeter
from models import RegistryError, WeightsError, get_model, load_pretrain, load_weights
from metrics.report import plot_confusion, write_per_class_csv
from reader import ListFileError, get_reader, parse_list
from utils import checkpoint, env, inference, pipeline, predict_modes
from utils.config_utils import ConfigError, explicit_keys, print_configs, to_plain
from utils.download import DownloadError, fetch_url, released_weights
from utils.engine import (Amp, TrainingError, build_loader, build_optimizer, evaluate, predict,
                          set_loader_epoch, train_one_epoch)
from utils.loader import LoaderError
from utils.ranks import Ranks

logger = logging.getLogger(__name__)

# The project's own errors, which end a run with one line instead of a traceback; any
# other exception is a bug and keeps its traceback.  (Interrupted is handled by run_job.)
USER_ERRORS = (ConfigError, WeightsError, DownloadError, ListFileError, RegistryError,
               predict_modes.InputError, env.EnvError, TrainingError, LoaderError)


def setup_runtime(cfg, args):
    """Threads, device and process group for this process; -> (rank, world size).
    An explicit --use_gpu True without a GPU is an error; the config's default
    (TRAIN.use_gpu: True, as the original) falls back to the CPU with a warning."""
    rank, world = env.world()
    local = int(os.environ.get('PADDLE_LOCAL_SIZE', world))
    env.set_cpu_threads(args.cpu_threads, local)
    use_gpu = args.use_gpu
    if use_gpu is None:
        use_gpu = cfg.TRAIN.use_gpu and env.gpu_available()
        if cfg.TRAIN.use_gpu and not use_gpu:
            logger.warning("no GPU here: running on the CPU (TRAIN.use_gpu is True in the config)")
    env.set_device(use_gpu)
    env.init_distributed()
    return rank, world


def fetch_if_url(path):
    """`--weights https://...` downloads once, cached by URL (utils.download.fetch_url)."""
    return fetch_url(path) if path and path.startswith(('http://', 'https://')) else path


def resolve_weights(path, backbone='resnet'):
    """--weights as given, or the released model-zoo TSM (downloaded when absent; a
    ResNet-50, so there is none for MODEL.backbone mobilenetv2)."""
    if path:
        return fetch_if_url(path)
    if backbone != 'resnet':
        raise WeightsError(f"no released weights for MODEL.backbone {backbone}: pass --weights "
                           f"(MIT's MobileNetV2-TSM converted with tools/convert_weights.py, "
                           f"or a checkpoint of train.py)")
    logger.info("no --weights given: using the released model-zoo TSM weights")
    return released_weights('TSM')


def per_device_batch(global_batch, world):
    if global_batch < world:
        raise ConfigError(f"batch_size {global_batch} is smaller than the {world} devices")
    return global_batch // world


def read_labels(path, num_classes):
    """Class names from a label list ('idx name' or 'name' per line) or a JSON list/dict;
    indices as names when the file is missing."""
    if not path or not os.path.isfile(path):
        logger.warning("label file %s not found: printing class indices", path)
        return [str(i) for i in range(num_classes)]
    if path.endswith('.json'):
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
        names = data if isinstance(data, list) else [n for n, _ in sorted(
            data.items(), key=lambda kv: int(kv[1]))]
    else:
        with open(path, encoding='utf-8') as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        names = [ln.split(None, 1)[1] if ln.split(None, 1)[0].isdigit() and ' ' in ln else ln
                 for ln in lines]
    if len(names) != num_classes:
        raise ConfigError(f"{path} has {len(names)} class names, the model {num_classes}")
    return names


class StopRequest:
    """SIGINT/SIGTERM ask training to stop after the current step and save a resumable
    checkpoint; installed by train_job only (no handlers at import)."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum
        logger.warning("got %s: stopping after this step and saving a checkpoint",
                       signal.Signals(signum).name)

    def asked(self):
        """This process was asked to stop (the training loop tells the other ranks)."""
        return self.signal is not None

    def requested(self, ranks):
        """True on every rank when any rank was asked to stop."""
        return ranks.any(self.asked())


class Interrupted(Exception):
    """Training stopped by a signal after saving; the message says how to resume."""


def on_rank0(ranks, what, write):
    """Run `write()` on rank 0 only (checkpoints, logs); when it cannot write, every rank
    stops with the same one-line message instead of going on without it."""
    error = None
    if ranks.rank == 0:
        try:
            write()
        except OSError as e:
            error = (f"cannot write {what} ({e.strerror or e}); stopping (free some space or "
                     f"change --save_dir, then --resume latest)")
    error = ranks.from_rank0(error)
    if error:
        raise TrainingError(error)


def check_amp(amp):
    """Paddle's auto_cast only acts on a GPU: on the CPU it warns and computes in float32
    (the losses equal float32's to the last digit), so AMP there would be a promise the
    run does not keep."""
    if amp.enabled and paddle.get_device().startswith('cpu'):
        raise env.EnvError("TRAIN.amp needs a GPU: Paddle's auto_cast does nothing on the CPU "
                           "(training would run in float32); set TRAIN.amp: false (bfloat16 "
                           "inference on the CPU: eval.py/predict.py --precision bf16)")


def train_job(args, cfg):
    rank, world = setup_runtime(cfg, args)
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


def init_weights(model, optimizer, scaler, args, steps_per_epoch, seed, ranks, keep=()):
    """--resume, else --pretrain, read on rank 0 and sent to every rank, so the ranks
    agree on weights, optimizer, loss scale and position even when the checkpoint or
    the download exists on rank 0's machine only.  `keep`: model options the user gave
    explicitly, which the weights' options do not override.
    -> (first epoch, first batch of it, the run's seed)"""
    start = None
    if ranks.rank == 0:
        try:
            start = _start_point(model, args, steps_per_epoch, seed, keep)
        except USER_ERRORS as e:  # every rank stops with rank 0's line
            start = {'error': str(e.args[0] if e.args else e)}
    start = ranks.from_rank0(start)
    if 'error' in start:
        raise TrainingError(start['error'])
    ranks.model_from_rank0(model)
    if start.get('optimizer') is not None:
        optimizer.set_state_dict(checkpoint.to_tensors(start['optimizer']))
    if start.get('scaler'):
        restore_scaler(scaler, start['scaler'])
    return start['epoch'], start['next_iter'], start['seed']


def restore_scaler(scaler, state):
    """The loss scale and its counters as a checkpoint saved them (a scaler that is off,
    as on the CPU, has none to restore)."""
    if getattr(scaler, '_enable', True):
        scaler.load_state_dict(state)


def _start_point(model, args, steps_per_epoch, seed, keep=()):
    """Load the weights a run starts from into `model`; -> {'epoch', 'next_iter', 'seed',
    'optimizer', 'scaler'} (optimizer None: a fresh one)."""
    fresh = {'epoch': 0, 'next_iter': 0, 'seed': seed, 'optimizer': None, 'scaler': None}
    if not args.resume:
        _pretrain(model, args.pretrain, keep)
        return fresh
    prefix = checkpoint.strip_suffix(args.resume)
    if os.path.basename(prefix) == 'latest':
        folder = os.path.dirname(prefix) or args.save_dir
        found = checkpoint.find_latest(folder, args.model_name.upper())
        if found is None:
            logger.info("--resume latest: no checkpoint in %s yet, starting afresh", folder)
            _pretrain(model, args.pretrain, keep)
            return fresh
        prefix = found
    weights = fetch_if_url(args.resume) if args.resume.startswith(('http://', 'https://')) \
        else prefix + '.pdparams' if os.path.isfile(prefix + '.pdparams') else prefix
    if not os.path.exists(weights):
        raise WeightsError(f"--resume {args.resume}: no checkpoint there (expected "
                           f"{prefix}.pdparams, and {prefix}.pdopt beside it to continue a run)")
    if not os.path.isfile(prefix + '.pdopt'):
        load_weights(model, weights, keep)  # a released model: weights only, as the model zoo did
        logger.info("resumed from %s: weights only (no %s.pdopt beside them), so training "
                    "starts at epoch 0 with a fresh optimizer", weights, prefix)
        return fresh
    state = checkpoint.read_opt_state(prefix)
    load_weights(model, weights, keep)
    epoch, next_iter = int(state['epoch']), state.get('next_iter')
    if next_iter is None or next_iter >= steps_per_epoch:
        epoch, next_iter = epoch + 1, 0
    logger.info("resumed from %s: continuing at epoch %d, iteration %d", prefix, epoch,
                next_iter)
    return {'epoch': epoch, 'next_iter': next_iter, 'seed': int(state.get('seed', seed)),
            'optimizer': state['optimizer'], 'scaler': state.get('scaler')}


def _pretrain(model, pretrain, keep=()):
    """--pretrain: a file, folder or URL; absent: ImageNet ResNet-50 (the model zoo
    publishes no other depth, and no MobileNetV2); 'none': from scratch."""
    if pretrain is None and model.backbone_name != 'resnet':
        logger.warning("no --pretrain given and there are no ImageNet %s weights in this "
                       "project's format: training from scratch (pass --pretrain PATH, e.g. "
                       "MIT's Kinetics MobileNetV2-TSM converted with "
                       "tools/convert_weights.py, or --pretrain none to say so)",
                       model.backbone_name)
    elif pretrain is None and model.backbone_depth == 50:
        logger.info("no --pretrain given: using the ImageNet ResNet-50 weights")
        pretrain = released_weights('ResNet50_pretrained')
    elif pretrain is None:
        logger.warning("no --pretrain given and the model zoo publishes no ImageNet weights "
                       "for ResNet-%d: training from scratch, which needs far more epochs "
                       "(pass --pretrain PATH, or --pretrain none to say so)",
                       model.backbone_depth)
    if pretrain and pretrain.lower() != 'none':
        load_pretrain(model, fetch_if_url(pretrain), keep)
    else:
        logger.info("training from scratch (no pretrained weights)")


def report_failures(stats, what, filelist, epoch=None):
    """Every video failed: stop.  Some failed: say how many (each was logged by name)."""
    when = f" in epoch {epoch}" if epoch is not None else ''
    if stats['num_videos'] == 0:
        raise TrainingError(f"every video of {filelist} failed to decode{when} "
                            f"({stats['num_failed']} tried); check the list and the files")
    if stats['num_failed']:
        logger.warning("%d of %d videos failed to decode during %s%s (skipped, named above)",
                       stats['num_failed'], stats['num_failed'] + stats['num_videos'], what, when)


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


def class_names(cfg):
    """Names for reports: INFER.kinetics_labels, or the class indices."""
    try:
        return read_labels(cfg.INFER.kinetics_labels, cfg.MODEL.num_classes)
    except ConfigError as e:
        logger.warning("%s: naming classes by index", e)
        return [str(i) for i in range(cfg.MODEL.num_classes)]


def eval_job(args, cfg):
    rank, world = setup_runtime(cfg, args)
    print_configs(cfg, 'Test', logger)
    logger.info("[TEST] protocol: %s", predict_modes.protocol_text(cfg.TEST, cfg.MODEL.seg_num))
    model = get_model(args.model_name, cfg, 'test')
    weights = resolve_weights(args.weights, cfg.MODEL.backbone)
    load_weights(model, weights, keep=explicit_keys(cfg, 'MODEL'))
    model = for_inference(model, args, cfg, 'TEST', weights)
    loader = build_loader(get_reader(args.model_name, 'test', cfg),
                          per_device_batch(cfg.TEST.batch_size, world),
                          cfg.TEST.num_reader_threads, rank, world)
    meter = AccuracyMeter(cfg.MODEL.num_classes)
    result = evaluate(model, loader, args.log_interval, desc='test', meter=meter)
    report_failures(result, 'evaluation', cfg.TEST.filelist)
    if rank == 0:
        print(f"[TEST] Finish, loss: {result['loss']:.5f}")
        print(f"TOP1_ACC: {result['top1']:.5f}")
        print(f"TOP5_ACC: {result['top5']:.5f}")
        print(f"MEAN_CLASS_ACC: {result['mean_class_acc']:.5f}")
        os.makedirs(args.save_dir, exist_ok=True)
        np.save(os.path.join(args.save_dir, 'confusion.npy'), meter.confusion)
        names = class_names(cfg)
        write_per_class_csv(meter.confusion, names,
                            os.path.join(args.save_dir, 'per_class_accuracy.csv'))
        plot_confusion(meter.confusion, names, os.path.join(args.save_dir, 'confusion.png'),
                       title=args.model_name.upper())
        result['protocol'] = {k: cfg.TEST[k] for k in ('num_clips', 'dense_sample', 'num_crops',
                                                       'keep_ratio', 'average', 'short_size',
                                                       'target_size')}
        out = os.path.join(args.save_dir, 'eval_results.json')
        with open(out, 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2)
        logger.info("wrote %s", out)
    return result


def predict_job(args, cfg):
    setup_runtime(cfg, args)
    model = get_model(args.model_name, cfg, 'infer')
    weights = resolve_weights(args.weights, cfg.MODEL.backbone)
    load_weights(model, weights, keep=explicit_keys(cfg, 'MODEL'))
    names = read_labels(cfg.INFER.kinetics_labels, cfg.MODEL.num_classes)
    if getattr(args, 'online', False):
        streams, _ = online_for_inference(model, args, cfg, 'INFER', weights,
                                          args.cpu_threads or None)
        return predict_modes.online_job(args, cfg, streams, names)
    fmt, video_path = cfg.MODEL.format, args.video_path or cfg.INFER.video_path
    if video_path:  # one video, or every video under a folder
        items = predict_modes.video_items(video_path, fmt)
    else:
        items = parse_list(args.filelist or cfg.INFER.filelist, fmt, cfg.MODEL.num_classes,
                           need_label=False)
    times, failed, what = None, 0, 'videos'
    if getattr(args, 'window_seconds', None):
        items, times, failed = predict_modes.window_items(
            items, fmt, args.window_seconds, args.stride_seconds or args.window_seconds)
        what = 'windows'
    plan = pipeline.plan_predict(len(items), cfg.INFER, explicit_keys(cfg, 'INFER'),
                                 args.cpu_threads)
    logger.info("decoding and the engine: %s", pipeline.describe(plan))
    model = for_inference(model, args, cfg, 'INFER', weights, plan.engine_threads)
    logger.info("protocol: %s", predict_modes.protocol_text(cfg.INFER, cfg.MODEL.seg_num))
    records = []
    if items:
        records, failed_items = predict_items(model, cfg, items, plan, args.infer_topk,
                                              args.model_name)
        failed += failed_items
    records = predict_modes.report(records, names, times)
    if failed:
        logger.warning("%d of %d %s failed to decode (skipped, named above)", failed,
                       failed + len(records), what)
    if not records:
        raise TrainingError("no video could be decoded; nothing predicted")
    predict_modes.write_results(records, args.save_dir)
    return records


def predict_items(model, cfg, items, plan, topk, model_name='TSM'):
    """The reader's items through `model` as `plan` (utils/pipeline.py) shares the cores:
    -> (records, videos that failed).  predict.py's path, which bench/e2e.py times."""
    reader = get_reader(model_name, 'infer', cfg, items=items)
    reader.decode_threads = plan.decode_threads
    loader = build_loader(reader, cfg.INFER.batch_size, plan.workers)
    return predict(model, loader, topk)


def engine_settings(args):
    """--use_inference (default: on the CPU), --precision (default bf16 where the CPU has
    it, else fp32) and --backend -> (precision, backend), or None for the eager model."""
    from engines.base import default_precision
    on_cpu = paddle.get_device().startswith('cpu')
    use = getattr(args, 'use_inference', None)
    if use is None:
        use = on_cpu
    asked = getattr(args, 'precision', None)
    if use and not on_cpu:
        logger.warning("--use_inference runs on the CPU only: using the eager model on %s",
                       paddle.get_device())
        use = False
    if not use:
        if asked not in (None, 'fp32'):
            logger.warning("--precision %s applies to an inference engine: the eager model "
                           "runs float32", asked)
        return None
    return asked or default_precision(), getattr(args, 'backend', 'auto')


def for_inference(model, args, cfg, section, weights, threads=None):
    """`model` exported once (cached) for --backend's engine and run in --precision with
    `threads` (default: --cpu_threads, else every core), behind the model's call
    signature (utils/inference.py, engines/); the eager model itself when engine_settings
    says so."""
    settings = engine_settings(args)
    if settings is None:
        return model
    return inference.inference_model(model, weights, cfg, section,
                                     threads or inference.threads(), *settings)


def online_for_inference(model, args, cfg, section, weights, threads=None):
    """The per-frame model of `model` (models/online.py) as engine_settings says: -> a
    function window -> a new OnlineStream (each with states of its own), and what runs it
    ({'engine', 'precision', ...})."""
    from models.online import OnlineStream, OnlineTSM, check_online
    try:
        check_online(model)  # seglen, shift direction: before any export
    except ValueError as e:
        raise ConfigError(str(e)) from None
    settings = engine_settings(args)
    if settings is None:
        return (lambda window: OnlineTSM(copy.deepcopy(model), window),
                {'engine': 'eager', 'precision': 'fp32'})
    runner, shapes = inference.online_runner(model, weights, cfg, section,
                                             threads or inference.threads(), *settings)
    step = inference.runner_step(runner)
    return (lambda window: OnlineStream(step, shapes, window, runner.batch),
            runner.describe())


def export_job(args, cfg):
    """Save `<save_dir>/<MODEL_NAME>` (--online: `<MODEL_NAME>_online`, the per-frame
    model) for --backend's engine with --batch (-1: any; default engines.BATCH), checked
    against the eager model;
    -> (the artifact's path, the files written)."""
    import engines
    from models.online import check_online
    setup_runtime(cfg, args)
    model = get_model(args.model_name, cfg, 'infer')
    load_weights(model, resolve_weights(args.weights), keep=explicit_keys(cfg, 'MODEL'))
    precision = args.precision
    backend = engines.choose(args.backend, inference.effective_precision(precision))
    online = getattr(args, 'online', False)
    formulation = getattr(args, 'formulation', None)
    if online:
        try:
            check_online(model)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        formulation = inference.ONLINE
    batch = getattr(args, 'batch', None)
    batch = engines.BATCH[backend] if batch is None else None if batch == -1 else batch
    path = os.path.join(args.save_dir, args.model_name.upper() + ('_online' if online else ''))
    return inference.export_artifact(model, backend, path,
                                     inference.input_shape_of(cfg, 'INFER', online), precision,
                                     formulation, inference.threads(), batch)
