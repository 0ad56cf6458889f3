"""inference_model.py's job: the model exported for an engine, checked against the eager
model, and saved under --save_dir."""
import os

import engines
from inference import artifacts
from inference.loading import check_online, load_for_inference
from reader import clip_shape


def export_job(args, cfg):
    """Save `<save_dir>/<MODEL_NAME>` (--online: `<MODEL_NAME>_online`, the per-frame
    model) for --backend's engine with --batch (-1: any; default engines.BATCH), checked
    against the eager model;
    -> (the artifact's path, the files written)."""
    model = load_for_inference(args, cfg, 'infer').model
    precision = args.precision
    backend = engines.choose(args.backend, artifacts.effective_precision(precision))
    online = getattr(args, 'online', False)
    formulation = getattr(args, 'formulation', None)
    if online:
        check_online(model)
        formulation = artifacts.ONLINE
    batch = getattr(args, 'batch', None)
    batch = engines.BATCH[backend] if batch is None else None if batch == -1 else batch
    path = os.path.join(args.save_dir, args.model_name.upper() + ('_online' if online else ''))
    return artifacts.export_artifact(model, backend, path,
                                     clip_shape(cfg, 'INFER', online=online), precision,
                                     formulation, artifacts.threads(), batch)
