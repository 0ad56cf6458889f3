"""predict.py's job: class probabilities for a video, every video under a folder, a list,
windows along long videos, or (--online) a stream one frame at a time."""
import logging

from inference import core_plan
from inference.loading import for_inference, load_for_inference, online_for_inference
from jobs import online_job
from jobs.predict_output import report, write_results
from reader import get_reader, parse_list
from reader.inputs import protocol_text, read_labels, video_items, window_items
from training.evaluate import predict
from training.loader import build_loader
from training.loop import TrainingError
from utils.config_utils import explicit_keys

logger = logging.getLogger(__name__)


def predict_job(args, cfg):
    loaded = load_for_inference(args, cfg, 'infer')
    model, weights = loaded.model, loaded.weights
    names = read_labels(cfg.INFER.kinetics_labels, cfg.MODEL.num_classes)
    if getattr(args, 'online', False):
        streams, _ = online_for_inference(model, args, cfg, 'INFER', weights,
                                          args.cpu_threads or None)
        return online_job.online_job(args, cfg, streams, names)
    fmt, video_path = cfg.MODEL.format, args.video_path or cfg.INFER.video_path
    if video_path:  # one video, or every video under a folder
        items = video_items(video_path, fmt)
    else:
        items = parse_list(args.filelist or cfg.INFER.filelist, fmt, cfg.MODEL.num_classes,
                           need_label=False)
    times, failed, what = None, 0, 'videos'
    if getattr(args, 'window_seconds', None):
        items, times, failed = window_items(
            items, fmt, args.window_seconds, args.stride_seconds or args.window_seconds)
        what = 'windows'
    plan = core_plan.plan_predict(len(items), cfg.INFER, explicit_keys(cfg, 'INFER'),
                                  args.cpu_threads)
    logger.info("decoding and the engine: %s", core_plan.describe(plan))
    model = for_inference(model, args, cfg, 'INFER', weights, plan.engine_threads)
    logger.info("protocol: %s", protocol_text(cfg.INFER, cfg.MODEL.seg_num))
    records = []
    if items:
        records, failed_items = predict_items(model, cfg, items, plan, args.infer_topk,
                                              args.model_name)
        failed += failed_items
    records = report(records, names, times)
    if failed:
        logger.warning("%d of %d %s failed to decode (skipped, named above)", failed,
                       failed + len(records), what)
    if not records:
        raise TrainingError("no video could be decoded; nothing predicted")
    write_results(records, args.save_dir)
    return records


def predict_items(model, cfg, items, plan, topk, model_name='TSM'):
    """The reader's items through `model` as `plan` (inference/core_plan.py) shares the cores:
    -> (records, videos that failed).  predict.py's path, which bench/e2e.py times."""
    reader = get_reader(model_name, 'infer', cfg, items=items)
    reader.decode_threads = plan.decode_threads
    loader = build_loader(reader, cfg.INFER.batch_size, plan.workers)
    return predict(model, loader, topk)
