"""eval.py's job: the model on every video of TEST.filelist through the one evaluation;
prints TOP1_ACC / TOP5_ACC as the original, and writes the confusion matrix, per-class
accuracy and eval_results.json."""
import json
import logging
import os

import numpy as np

from inference.loading import for_inference, load_for_inference
from metrics import AccuracyMeter
from metrics.report import plot_confusion, write_per_class_csv
from reader import get_reader
from reader.inputs import PROTOCOL_KEYS, protocol_text, read_labels
from training.evaluate import evaluate
from training.loader import build_loader, per_device_batch
from training.loop import report_failures
from utils.config_utils import ConfigError, print_configs

logger = logging.getLogger(__name__)


def class_names(cfg):
    """Names for reports: INFER.kinetics_labels, or the class indices."""
    try:
        return read_labels(cfg.INFER.kinetics_labels, cfg.MODEL.num_classes)
    except ConfigError as e:
        logger.warning("%s: naming classes by index", e)
        return [str(i) for i in range(cfg.MODEL.num_classes)]


def eval_job(args, cfg):
    loaded = load_for_inference(args, cfg, 'test')
    rank, world = loaded.rank, loaded.world
    print_configs(cfg, 'Test', logger)
    logger.info("[TEST] protocol: %s", protocol_text(cfg.TEST, cfg.MODEL.seg_num))
    model = for_inference(loaded.model, args, cfg, 'TEST', loaded.weights)
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
        result['protocol'] = {k: cfg.TEST[k] for k in PROTOCOL_KEYS}
        out = os.path.join(args.save_dir, 'eval_results.json')
        with open(out, 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2)
        logger.info("wrote %s", out)
    return result
