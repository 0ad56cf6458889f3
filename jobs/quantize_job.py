"""tools/quantize.py's job: the model quantized to int8 on the videos of a list file,
written into the inference cache (where `--precision int8` finds it) and to --save_dir.

    clips = CalibrationClips(dataset, workers, limit)   # re-iterable model inputs
    result = quantize_job(args, cfg)

The calibration clips are what predict.py feeds the model: the list's videos, in a random
order of fixed seed (so that the first --subset clips are a sample of a list sorted by
class), decoded by the project's reader with the INFER section's sampling and transforms
(every view of a video is a clip), read by build_loader's worker processes while the
engine runs.  The
int8 model is quantized from the cached float32 export of the same engine (exported,
checked against the eager model and cached first if absent), so it has the float32
artifact's formulation, batch and output (logits).  The cache entry is the one
inference.artifacts.cache_entry names for precision int8; a second run replaces it.
"""
import json
import logging
import os
import shutil
import tempfile

import numpy as np

import engines
from engines import int8
from engines.base import EngineError
from inference import artifacts
from inference.loading import load_for_inference
from reader import ListFileError, clip_shape, get_reader, parse_list
from training.loader import build_loader, resilient_batches

logger = logging.getLogger(__name__)

SECTION = 'INFER'  # predict.py's and the server's section; eval.py's TEST when alike
CHECK_CLIPS = 32  # the first calibration clips, kept to compare int8 with float32


class CalibrationClips:
    """Model inputs float32 [1, T, 3L, S, S] from `dataset` (a reader), up to `limit`, each
    pass through a fresh build_loader with `workers` processes; the first `keep` of a
    pass are kept in `kept`.  A pass that decodes nothing raises ListFileError naming
    `filelist`."""

    def __init__(self, dataset, workers, limit, filelist, keep=CHECK_CLIPS):
        self.dataset, self.workers, self.filelist, self.keep = dataset, workers, filelist, keep
        self.limit = max(1, min(limit, len(dataset) * dataset.num_views))
        self.decoded = self.failed = 0
        self.kept = []

    def __len__(self):
        return self.limit

    def __iter__(self):
        self.decoded = self.failed = 0
        self.kept = []
        batches = resilient_batches(build_loader(self.dataset, 1, self.workers))
        for _, batch in batches:
            self.failed += int(batch['failed'])
            if not batch['paths']:
                continue
            imgs = np.asarray(batch['imgs'], np.float32)
            # [B, T, 3L, S, S] or [B, V, T, 3L, S, S] (views) -> [B*V, 1, T, 3L, S, S]
            for clip in imgs.reshape([-1, 1, *imgs.shape[-4:]]):
                if len(self.kept) < self.keep:
                    self.kept.append(clip)
                self.decoded += 1
                if self.decoded >= self.limit:
                    # NNCF asks for no more after this one: end the reader workers first
                    batches.close()
                    yield clip
                    return
                yield clip
        if not self.decoded:
            raise ListFileError(f"{self.filelist}: none of its {len(self.dataset)} videos "
                                f"could be decoded (named above); nothing to calibrate on")


def check(runner_fp32, runner_int8, clips):
    """engines.int8.compare of the two runners on `clips` [N, 1, T, 3L, S, S]."""
    x = np.concatenate(clips)  # -> [N, T, 3L, S, S]
    return int8.compare(int8.softmax(runner_fp32.run(x)), int8.softmax(runner_int8.run(x)))


def replace_entry(tmp, final):
    """The finished folder `tmp` in place of the cache entry `final` (a re-quantization
    replaces the previous int8 model)."""
    if os.path.isdir(final):
        old = tempfile.mkdtemp(prefix='.replaced-', dir=os.path.dirname(final))
        os.replace(final, os.path.join(old, 'entry'))
        shutil.rmtree(old, ignore_errors=True)
    artifacts.publish(tmp, final)


def quantize_job(args, cfg):
    """--backend's engine (OpenVINO) quantizes the model of --config/--weights on
    --filelist; -> {'cache': the entry's folder, 'files': the IR written to --save_dir,
    'calibration': {...}, 'check': int8 vs float32 on the first calibration clips}."""
    backend = engines.choose(args.backend, 'int8')
    if backend not in int8.QUANTIZERS:
        raise EngineError(f"--backend {backend}: no int8 quantization for it "
                          f"({int8.PADDLE_REASON}); use --backend openvino")
    eng = engines.engine(backend)
    items = parse_list(args.filelist, cfg.MODEL.format, cfg.MODEL.num_classes, need_label=False)
    if not items:
        raise ListFileError(f"{args.filelist}: no videos listed; nothing to calibrate on")
    loaded = load_for_inference(args, cfg, 'infer')
    model, weights = loaded.model, loaded.weights
    if clip_shape(cfg, 'TEST') != clip_shape(cfg, SECTION):
        logger.warning("TEST.target_size differs from INFER's: eval.py --precision int8 will "
                       "not find this model (pass -o INFER.target_size=%s to quantize for it)",
                       cfg.TEST.target_size)
    threads = artifacts.threads()
    fp32_xml, batch, _ = artifacts.cached_artifact(eng, model, weights, cfg, SECTION, 'fp32',
                                                   threads)
    # a random sample (fixed seed) when the list holds more than --subset clips: lists
    # are often sorted by class, and NNCF takes the first clips it is given
    items = [items[i] for i in np.random.default_rng(0).permutation(len(items))]
    clips = CalibrationClips(get_reader(args.model_name, 'infer', cfg, items=items),
                             cfg.INFER.num_reader_threads, args.subset, args.filelist)
    logger.info("calibrating on up to %d clips of %s (%d videos)", len(clips), args.filelist,
                len(items))
    qmodel = int8.quantize_openvino(fp32_xml, clips, len(clips))
    if clips.failed:
        logger.warning("%d of %d videos failed to decode (skipped, named above)", clips.failed,
                       clips.failed + clips.decoded)
    final, prefix, desc = artifacts.cache_entry(eng, model, weights, cfg, SECTION, 'int8')
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.quantize-', dir=os.path.dirname(final))
    try:
        staged = int8.save_ir(qmodel, os.path.join(tmp, os.path.basename(prefix)))
        result = {'calibration': {'filelist': os.path.abspath(args.filelist),
                                  'quantized_from': fp32_xml,
                                  'clips': clips.decoded, 'failed_videos': clips.failed,
                                  'fake_quantize_ops': len(int8.quantized_ops(qmodel)),
                                  'versions': quantization_versions()},
                  'check': check(eng.load(fp32_xml, threads, 'fp32', batch),
                                 eng.load(staged, threads, 'int8', batch), clips.kept)}
        with open(os.path.join(tmp, 'meta.json'), 'w', encoding='utf-8') as f:
            json.dump({**desc, **result}, f, indent=1, default=str)
        replace_entry(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(args.save_dir, exist_ok=True)
    saved = int8.save_ir(qmodel, os.path.join(args.save_dir, args.model_name.upper()),
                             probabilities=True)
    c = result['check']
    logger.info("int8 against float32 on the first %d calibration clips: top-1 agreement "
                "%.3f, mean |p_int8 - p_fp32| %.2g (largest %.2g)", c['clips'],
                c['top1_agreement'], c['mean_abs_prob_diff'], c['max_abs_prob_diff'])
    return {'cache': final, 'files': [saved, saved[:-4] + '.bin'], **result}


def quantization_versions():
    import nncf
    import openvino
    return {'nncf': nncf.__version__, 'openvino': openvino.__version__}
