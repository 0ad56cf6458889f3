"""The end-to-end demo: TSM learns frame order, TSN cannot.

    python tools/demo.py --out_dir output/demo [--quick] [--seed 0]

1. generates the frame-order dataset (data/demo_dataset.py: 8 classes in 4
   time-reversed pairs) into <out_dir>/data, unless a matching one is there;
2. trains TSM (configs/tsm_demo.yaml) and TSN (configs/tsn_demo.yaml: the same with
   MODEL.shift_ratio 0) from scratch with train.py;
3. evaluates both on the held-out split with eval.py;
4. predicts one held-out video with predict.py (the TSM weights);
5. writes <out_dir>/summary.json and the pictures: curves.png, confusion_tsm.png,
   confusion_tsn.png, predict_frames.png.

Every step runs the real entry scripts in a subprocess (the code users run); each
one's output goes to <out_dir>/logs/<step>.log.  A failing step ends the demo with
one line naming it.  --quick: a tiny dataset, one epoch, for tests (not meaningful).
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MODELS = (('tsm', 'configs/tsm_demo.yaml'), ('tsn', 'configs/tsn_demo.yaml'))
FULL_DATA = dict(train_per_class=48, val_per_class=16, frames=24)
QUICK_DATA = dict(train_per_class=2, val_per_class=1, frames=24)
QUICK_SIZE = 32            # the smallest frame size decord 0.6 decodes correctly
QUICK_OVERRIDES = ['TRAIN.epoch=1', 'TRAIN.batch_size=8', 'VALID.batch_size=8',
                   'TEST.batch_size=8']
PREDICT_CLASS = 'moving_down'  # the held-out video predicted (first of this class)


class StepError(RuntimeError):
    """A demo step failed; the message is one line naming the step."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out_dir', default='output/demo', help='data, runs, summary, pictures')
    p.add_argument('--quick', action='store_true',
                   help='tiny data, 1 epoch, tiny frames: a smoke test (< 1 minute)')
    p.add_argument('--seed', type=int, default=0, help='seed of the generated dataset')
    p.add_argument('--keep_checkpoints', action='store_true',
                   help='keep the per-epoch checkpoints (default: only the final weights)')
    return p.parse_args(argv)


def log(msg=''):
    print(msg, flush=True)


def run_step(name, cmd, log_path, echo=()):
    """Run cmd in the repo root, output to log_path; lines containing any of `echo`
    are shown.  A non-zero exit raises StepError with the step name and the last line."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    tic = time.time()
    last = ''
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    with open(log_path, 'w', encoding='utf-8') as f:
        f.write('$ ' + ' '.join(cmd) + '\n')
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors='replace', env=env)
        for line in proc.stdout:
            f.write(line)
            if line.strip():
                last = line.strip()
            if any(e in line for e in echo):
                log('    ' + line.rstrip().split('] ', 2)[-1])
        rc = proc.wait()
    if rc != 0:
        raise StepError(f"step '{name}' failed (exit code {rc}): {last[:300]} "
                        f"(log: {log_path})")
    return time.time() - tic


def model_overrides(data_dir, quick, size):
    """-o flags: the generated lists and labels (wherever --out_dir is), quick sizes."""
    lists = {'TRAIN': 'train.list', 'VALID': 'val.list', 'TEST': 'val.list',
             'INFER': 'infer.list'}
    o = [f"{s}.filelist={os.path.join(data_dir, f)}" for s, f in lists.items()]
    o.append(f"INFER.kinetics_labels={os.path.join(data_dir, 'label_list.txt')}")
    if quick:
        for s in lists:
            o += [f"{s}.short_size={size}", f"{s}.target_size={size}"]
        o += QUICK_OVERRIDES
    return o


def flags(overrides):
    out = []
    for o in overrides:
        out += ['-o', o]
    return out


def generate_data(data_dir, cfg, quick, seed):
    from data.demo_dataset import generate
    spec = QUICK_DATA if quick else FULL_DATA
    size = QUICK_SIZE if quick else cfg.TRAIN.short_size
    try:
        info = generate(data_dir, spec['train_per_class'], spec['val_per_class'],
                        num_frames=spec['frames'], size=size, seed=seed, progress=False)
    except Exception as e:  # one line, like the subprocess steps
        raise StepError(f"step 'generate data' failed: {type(e).__name__}: {e}") from None
    return info, dict(spec, size=size, seed=seed)


def pick_video(infer_list, class_names):
    """The first video of PREDICT_CLASS in the inference list (else the first video)."""
    with open(infer_list, encoding='utf-8') as f:
        rows = [ln.rsplit(None, 1) for ln in f if ln.strip()]
    want = class_names.index(PREDICT_CLASS) if PREDICT_CLASS in class_names else -1
    for path, label in rows:
        if int(label) == want:
            return path, int(label)
    return rows[0][0], int(rows[0][1])


def sampled_frames(video_path, cfg):
    """The frames predict.py's reader takes from the video: eval-mode segment sampling,
    then the eval transform (scale, centre crop).  -> (uint8 [T, S, S, 3], indices)."""
    from reader.sampling import segment_indices
    from reader.transforms import eval_transform
    from reader.video_backends import open_video
    m, s = cfg.MODEL, cfg.INFER
    video = open_video(video_path, m.format)
    try:
        indices = segment_indices(video.num_frames, m.seg_num, m.seglen, 'infer')
        frames = video.get_frames(indices)
    finally:
        video.close()
    return eval_transform(frames, s.short_size, s.target_size), indices


def prune_checkpoints(save_dir):
    """Drop the per-epoch checkpoints (<NAME>_epoch<k>.pdparams/.pdopt), keep the final."""
    for name in os.listdir(save_dir):
        if '_epoch' in name and name.endswith(('.pdparams', '.pdopt')):
            os.remove(os.path.join(save_dir, name))


def machine():
    from utils.env import available_cpus
    try:
        from importlib.metadata import version
        paddle_version = version('paddlepaddle')
    except Exception:
        try:
            paddle_version = version('paddlepaddle-gpu')
        except Exception:
            paddle_version = 'unknown'
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {'cpu_count': os.cpu_count(), 'available_cpus': available_cpus(),
            'platform': platform.platform(), 'processor': platform.processor(),
            'python': platform.python_version(), 'paddle': paddle_version,
            'load_average_at_end': load}


def run(args):
    from utils.config_utils import apply_overrides, parse_config
    tic = time.time()
    out = os.path.abspath(args.out_dir)
    data_dir = os.path.join(out, 'data')
    logs = os.path.join(out, 'logs')
    os.makedirs(out, exist_ok=True)
    cfg0 = parse_config(os.path.join(ROOT, MODELS[0][1]))

    log(f"[1/5] data: {data_dir}")
    t = time.time()
    info, data_spec = generate_data(data_dir, cfg0, args.quick, args.seed)
    log(f"    {'existing' if info['skipped'] else 'generated'}: "
        f"{data_spec['train_per_class'] * 8} train, {data_spec['val_per_class'] * 8} held-out "
        f"videos, {data_spec['size']}x{data_spec['size']} px, {data_spec['frames']} frames "
        f"({time.time() - t:.0f} s)")
    overrides = model_overrides(data_dir, args.quick, data_spec['size'])
    with open(info['label_list'], encoding='utf-8') as f:
        class_names = [ln.strip() for ln in f if ln.strip()]

    summary = {'quick': bool(args.quick), 'data': dict(data_spec, dir=data_dir)}
    py = sys.executable
    for step, (key, config) in enumerate(MODELS, 2):
        name = key.upper()
        save = os.path.join(out, key)
        cfg = apply_overrides(parse_config(os.path.join(ROOT, config)), overrides)
        log(f"[{step}/5] train + evaluate {name} ({config}: ResNet-{cfg.MODEL.num_layers}, "
            f"shift_ratio {cfg.MODEL.shift_ratio}, {cfg.TRAIN.epoch} epochs)")
        train_s = run_step(f"train {name}", [
            py, 'train.py', '--model_name', 'TSM', '--config', config, '--pretrain', 'none',
            '--save_dir', save, '--fix_random_seed', 'True', '--log_interval', '0',
        ] + flags(overrides), os.path.join(logs, f"train_{key}.log"),
            echo=('Epoch', 'error'))
        if not args.keep_checkpoints:
            prune_checkpoints(save)
        eval_dir = os.path.join(save, 'eval')
        eval_s = run_step(f"evaluate {name}", [
            py, 'eval.py', '--model_name', 'TSM', '--config', config,
            '--weights', os.path.join(save, 'TSM.pdparams'), '--save_dir', eval_dir,
        ] + flags(overrides), os.path.join(logs, f"eval_{key}.log"), echo=('_ACC',))
        with open(os.path.join(eval_dir, 'eval_results.json'), encoding='utf-8') as f:
            res = json.load(f)
        summary[key] = {'top1': res['top1'], 'top5': res['top5'],
                        'mean_class_acc': res.get('mean_class_acc'), 'loss': res['loss'],
                        'num_videos': res['num_videos'], 'config': config,
                        'shift_ratio': cfg.MODEL.shift_ratio, 'epochs': cfg.TRAIN.epoch,
                        'train_seconds': round(train_s, 1), 'eval_seconds': round(eval_s, 1)}

    video, label = pick_video(info['infer_list'], class_names)
    log(f"[4/5] predict {os.path.relpath(video, out)} (true class: {class_names[label]}) "
        f"with TSM")
    pred_dir = os.path.join(out, 'predict')
    run_step('predict', [
        py, 'predict.py', '--model_name', 'TSM', '--config', MODELS[0][1],
        '--weights', os.path.join(out, 'tsm', 'TSM.pdparams'), '--video_path', video,
        '--infer_topk', '3', '--save_dir', pred_dir,
    ] + flags(overrides), os.path.join(logs, 'predict.log'), echo=(':    ',))
    with open(os.path.join(pred_dir, 'predict_results.json'), encoding='utf-8') as f:
        rec = json.load(f)[0]
    top_name, top_prob = rec['top_names'][0], rec['top_probs'][0]
    summary['prediction'] = {'video': video, 'true': class_names[label],
                             'top_names': rec['top_names'], 'top_probs': rec['top_probs']}

    log("[5/5] pictures")
    from tools import plots
    cfg_tsm = apply_overrides(parse_config(os.path.join(ROOT, MODELS[0][1])), overrides)
    pictures = {'curves': plots.plot_curves(
        {key.upper(): plots.load_history(os.path.join(out, key, 'history.json'))
         for key, _ in MODELS}, os.path.join(out, 'curves.png'))}
    for key, _ in MODELS:
        import numpy as np
        cm = np.load(os.path.join(out, key, 'eval', 'confusion.npy'))
        pictures[f'confusion_{key}'] = plots.plot_confusion(
            cm, class_names, os.path.join(out, f'confusion_{key}.png'),
            title=f"{key.upper()} (held-out)")
    frames, indices = sampled_frames(video, cfg_tsm)
    pictures['predict_frames'] = plots.plot_contact_sheet(
        frames, indices, os.path.join(out, 'predict_frames.png'),
        title=f"TSM predicts {top_name} (p={top_prob:.2f}); true: {class_names[label]}")
    summary['pictures'] = {k: os.path.relpath(v, out) for k, v in pictures.items()}
    summary['seconds'] = round(time.time() - tic, 1)
    summary['machine'] = machine()
    with open(os.path.join(out, 'summary.json'), 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2)

    log()
    log(f"{'model':<6}{'shift':>7}{'top-1':>8}{'top-5':>8}{'train s':>9}")
    for key, _ in MODELS:
        s = summary[key]
        log(f"{key.upper():<6}{s['shift_ratio']:>7.3f}{s['top1']:>8.3f}{s['top5']:>8.3f}"
            f"{s['train_seconds']:>9.0f}")
    log(f"prediction: {os.path.basename(video)} -> {top_name} (p={top_prob:.2f})")
    log(f"total {summary['seconds']:.0f} s on {summary['machine']['available_cpus']} CPU(s); "
        f"summary and pictures in {out}")
    return summary


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except StepError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == '__main__':
    main()
