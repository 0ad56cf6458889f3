"""The end-to-end demo: TSM learns frame order, TSN cannot.

    python -m tools.demo --out_dir output/demo [--quick] [--seed 0]
    python -m tools.demo --backbone mobilenetv2 --online    # the online model, per frame

1. generates the frame-order dataset (data/demo_dataset.py: 8 classes in 4
   time-reversed pairs) into <out_dir>/data, unless a matching one is there;
2. trains TSM (configs/tsm_demo.yaml) and TSN (configs/tsn_demo.yaml: the same with
   MODEL.shift_ratio 0) from scratch with train.py, then evaluates each on the held-out
   split with eval.py; the two models run side by side, each on half of the CPUs;
3. predicts one held-out video with predict.py (the TSM weights);
4. writes <out_dir>/summary.json and the pictures: curves.png, confusion_tsm.png,
   confusion_tsn.png, predict_frames.png.

Every step runs the real entry scripts in a subprocess (the code users run); each
one's output goes to <out_dir>/logs/<step>.log.  A failing step ends the demo with
one line naming it.  --quick: a tiny dataset, one epoch, for tests (not meaningful).

--backbone mobilenetv2: both models on MIT's MobileNetV2 (MODEL.backbone) instead of the
ResNet-18.  --online: TSM trains with the backward (uni-directional) shift of online TSM,
and step 3 runs predict.py --online: the held-out video one frame at a time, each frame
through the 2D network once, the label printed whenever it changes.
"""
import argparse
import concurrent.futures
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time

from utils.config_utils import ConfigError, apply_overrides, parse_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the scripts run from here

MODELS = (('tsm', 'configs/tsm_demo.yaml'), ('tsn', 'configs/tsn_demo.yaml'))
# videos per class; frames = seg_num x an odd number, so that the test-time sampling
# (centre frame of each segment) is symmetric under time reversal
FULL_DATA = dict(train_per_class=48, val_per_class=16)
QUICK_DATA = dict(train_per_class=2, val_per_class=1)
FRAMES_PER_SEGMENT = 5
QUICK_SIZE = 32
QUICK_OVERRIDES = ['TRAIN.epoch=1', 'TRAIN.batch_size=8', 'VALID.batch_size=8',
                   'TEST.batch_size=8'] + [f"{s}.num_reader_threads=0"
                                           for s in ('TRAIN', 'VALID', 'TEST', 'INFER')]
PREDICT_CLASS = 'moving_down'  # the held-out video predicted (the first of this class)


class StepError(RuntimeError):
    """A demo step failed; the message is one line naming the step."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out_dir', default='output/demo', help='data, runs, summary, pictures')
    p.add_argument('--quick', action='store_true',
                   help='tiny data, 1 epoch: a smoke test of every step (< 1 minute)')
    p.add_argument('--seed', type=int, default=0, help='seed of the generated dataset')
    p.add_argument('--sequential', action='store_true',
                   help='train TSM, then TSN, each on every CPU (default: side by side)')
    p.add_argument('--keep_checkpoints', action='store_true',
                   help='keep the per-epoch checkpoints (default: only the final weights)')
    p.add_argument('--backbone', choices=('resnet', 'mobilenetv2'), default='resnet',
                   help="MODEL.backbone of both models (default: the configs' ResNet-18)")
    p.add_argument('--online', action='store_true',
                   help='train TSM with the backward shift and predict frame by frame')
    p.add_argument('-o', '--override', action='append', default=[], metavar='SECTION.key=value',
                   help="passed to every train/eval/predict run, after the demo's own")
    return p.parse_args(argv)


def log(msg=''):
    print(msg, flush=True)


class Runner:
    """Runs the steps' subprocesses; on a failure the others still running are stopped."""

    def __init__(self, logs):
        self.logs, self.procs, self.failed = logs, set(), threading.Event()
        self.stopped = set()  # processes terminated because another step failed
        self.lock = threading.Lock()

    def run(self, name, cmd, log_name, echo=None):
        """Run cmd in the repo root, its output to logs/<log_name>.log; echo(line) -> a
        string to show, or None.  -> seconds; a non-zero exit raises StepError naming the
        step, with the last line the step printed (the scripts end with one error line)."""
        if self.failed.is_set():
            raise StepError(f"step '{name}' not run: another step failed")
        path = os.path.join(self.logs, log_name + '.log')
        tic, last = time.time(), ''
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        with open(path, 'w', encoding='utf-8') as f:
            f.write('$ ' + ' '.join(cmd) + '\n')
            f.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors='replace',
                                    env=env)
            with self.lock:
                self.procs.add(proc)
            try:
                for line in proc.stdout:
                    f.write(line)
                    if line.strip():
                        last = line.strip()
                    shown = echo(line) if echo else None
                    if shown:
                        log('    ' + shown)
                rc = proc.wait()
            finally:
                with self.lock:
                    self.procs.discard(proc)
        if rc != 0:
            if proc in self.stopped:
                raise StepError(f"step '{name}' stopped: another step failed")
            self.fail()
            raise StepError(f"step '{name}' failed (exit code {rc}): {last[:300]} "
                            f"(log: {path})")
        return time.time() - tic

    def fail(self):
        self.failed.set()
        with self.lock:
            for proc in self.procs:
                self.stopped.add(proc)
                proc.terminate()


class EpochLines:
    """Turns train.py's '[TRAIN] Epoch e done: loss ..' and '[VALID] Epoch e: loss ..' log
    lines into one line per epoch: 'TSM epoch 3/10  train loss 1.39 top1 0.53 | valid ..'."""
    TRAIN = re.compile(r"\[TRAIN\] Epoch (\d+) done: loss ([\d.naif]+), top1 ([\d.]+)")
    VALID = re.compile(r"\[VALID\] Epoch (\d+): loss ([\d.naif]+), top1 ([\d.]+)")

    def __init__(self, name, epochs):
        self.name, self.epochs, self.train = name, epochs, None

    def __call__(self, line):
        m = self.TRAIN.search(line)
        if m:
            self.train = m.groups()
            return None
        m = self.VALID.search(line)
        if m and self.train and self.train[0] == m.group(1):
            e, loss, top1 = self.train
            return (f"{self.name} epoch {int(e) + 1:>2}/{self.epochs}  train loss "
                    f"{float(loss):.3f} top1 {float(top1):.3f} | valid loss "
                    f"{float(m.group(2)):.3f} top1 {float(m.group(3)):.3f}")
        if 'error' in line:
            return f"{self.name} {line.strip()}"
        return None


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


def variant_overrides(args):
    """-o flags of --backbone and --online (the user's own -o still come after them)."""
    o = [f"MODEL.backbone={args.backbone}"] if args.backbone != 'resnet' else []
    return o + (['MODEL.shift_direction=backward'] if args.online else [])


def backbone_text(model_cfg):
    m = model_cfg
    return f"ResNet-{m.num_layers}" if m.backbone == 'resnet' else 'MobileNetV2'


def flags(overrides):
    out = []
    for o in overrides:
        out += ['-o', o]
    return out


def generate_data(data_dir, cfg, quick, seed):
    """The dataset at the config's frame size (the reader then need not resize)."""
    from data.demo_dataset import generate
    spec = dict(QUICK_DATA if quick else FULL_DATA)
    spec.update(size=QUICK_SIZE if quick else cfg.TRAIN.short_size,
                frames=cfg.MODEL.seg_num * FRAMES_PER_SEGMENT, seed=seed)
    try:
        info = generate(data_dir, spec['train_per_class'], spec['val_per_class'],
                        num_frames=spec['frames'], size=spec['size'], seed=seed,
                        progress=False)
    except Exception as e:  # one line, as the subprocess steps
        raise StepError(f"step 'generate data' failed: {type(e).__name__}: {e}") from None
    return info, spec


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
    import warnings
    warnings.filterwarnings('ignore', message='No ccache found')  # printed by paddle's import
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


ONLINE_LINE = re.compile(r"frame \d+: ")  # predict.py --online prints each label change


def predict(runner, out, video, overrides, online):
    """predict.py on one video with the TSM weights -> the summary's prediction entry:
    top_names/top_probs (online: the last frame's), and online the label changes."""
    pred_dir = os.path.join(out, 'predict')
    cmd = [sys.executable, 'predict.py', '--model_name', 'TSM', '--config', MODELS[0][1],
           '--weights', os.path.join(out, 'tsm', 'TSM.pdparams'), '--video_path', video,
           '--infer_topk', '3', '--save_dir', pred_dir] + flags(overrides)
    if not online:
        runner.run('predict', cmd, 'predict',
                   echo=lambda line: line.rstrip() if line.startswith('    ') else None)
        with open(os.path.join(pred_dir, 'predict_results.json'), encoding='utf-8') as f:
            rec = json.load(f)[0]
        return {'video': video, 'top_names': rec['top_names'], 'top_probs': rec['top_probs']}
    runner.run('predict online', cmd + ['--online'], 'predict',
               echo=lambda line: line.strip() if ONLINE_LINE.search(line) else None)
    with open(os.path.join(pred_dir, 'online_results.json'), encoding='utf-8') as f:
        res = json.load(f)
    last = res['frames'][-1]
    return {'video': video, 'online': True, 'frames': len(res['frames']),
            'top_names': [last['class_name']], 'top_probs': [last['probability']],
            'changes': [{k: c[k] for k in ('frame', 'class_name', 'probability')}
                        for c in res['changes']]}


def prune_checkpoints(save_dir):
    """Drop the per-epoch checkpoints (<NAME>_epoch<k>.pdparams/.pdopt), keep the final."""
    for name in os.listdir(save_dir):
        if '_epoch' in name and name.endswith(('.pdparams', '.pdopt')):
            os.remove(os.path.join(save_dir, name))


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine():
    from importlib.metadata import PackageNotFoundError, version
    paddle_version = 'unknown'
    for dist in ('paddlepaddle', 'paddlepaddle-gpu'):
        try:
            paddle_version = f"{dist} {version(dist)}"
            break
        except PackageNotFoundError:
            pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    cpu_model = platform.processor()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            cpu_model = next((ln.split(':', 1)[1].strip() for ln in f
                              if ln.startswith('model name')), cpu_model)
    except OSError:
        pass
    return {'cpu_count': os.cpu_count(), 'available_cpus': available_cpus(),
            'platform': platform.platform(), 'processor': cpu_model,
            'python': platform.python_version(), 'paddle': paddle_version,
            'load_average': load}


def train_and_eval(runner, key, config, cfg, out, overrides, threads, args):
    """train.py then eval.py for one model -> its summary entry."""
    name, save = key.upper(), os.path.join(out, key)
    py = sys.executable
    train_s = runner.run(f"train {name}", [
        py, 'train.py', '--model_name', 'TSM', '--config', config, '--pretrain', 'none',
        '--save_dir', save, '--fix_random_seed', 'True', '--log_interval', '0',
        '--cpu_threads', str(threads)] + flags(overrides), f"train_{key}",
        echo=EpochLines(name, cfg.TRAIN.epoch))
    if not args.keep_checkpoints:
        prune_checkpoints(save)
    eval_dir = os.path.join(save, 'eval')
    eval_s = runner.run(f"evaluate {name}", [
        py, 'eval.py', '--model_name', 'TSM', '--config', config,
        '--weights', os.path.join(save, 'TSM.pdparams'), '--save_dir', eval_dir,
        '--cpu_threads', str(threads)] + flags(overrides), f"eval_{key}",
        echo=lambda line: f"{name} held-out {line.strip()}" if 'TOP1_ACC' in line else None)
    with open(os.path.join(eval_dir, 'eval_results.json'), encoding='utf-8') as f:
        res = json.load(f)
    m, t = cfg.MODEL, cfg.TRAIN
    return {'top1': res['top1'], 'top5': res['top5'],
            'mean_class_acc': res.get('mean_class_acc'), 'loss': res['loss'],
            'num_videos': res['num_videos'], 'config': config,
            'shift_ratio': m.shift_ratio, 'num_layers': m.num_layers, 'seg_num': m.seg_num,
            'backbone': m.backbone, 'shift_direction': m.shift_direction,
            'size': t.target_size, 'epochs': t.epoch, 'batch_size': t.batch_size,
            'learning_rate': t.learning_rate, 'cpu_threads': threads,
            'train_seconds': round(train_s, 1), 'eval_seconds': round(eval_s, 1)}


def run(args):
    tic = time.time()
    out = os.path.abspath(args.out_dir)
    data_dir = os.path.join(out, 'data')
    logs = os.path.join(out, 'logs')
    os.makedirs(logs, exist_ok=True)
    summary_path = os.path.join(out, 'summary.json')
    if os.path.exists(summary_path):
        os.remove(summary_path)  # a summary on disk always belongs to a finished run
    cfg0 = parse_config(os.path.join(ROOT, MODELS[0][1]))

    info, data_spec = data_step(data_dir, cfg0, args)
    overrides = (model_overrides(data_dir, args.quick, data_spec['size'])
                 + variant_overrides(args) + args.override)
    with open(info['label_list'], encoding='utf-8') as f:
        class_names = [ln.strip() for ln in f if ln.strip()]
    cfgs = {key: apply_overrides(parse_config(os.path.join(ROOT, config)), overrides)
            for key, config in MODELS}
    cpus = available_cpus()
    parallel = not args.sequential and cpus >= 2
    runner = Runner(logs)
    summary = {'quick': bool(args.quick), 'data': dict(data_spec, dir=data_dir)}
    summary.update(train_step(runner, cfgs, out, overrides, parallel, cpus, args))
    video, label = pick_video(info['infer_list'], class_names)
    summary['prediction'] = predict_step(runner, out, video, class_names[label], overrides,
                                         args.online)
    summary['pictures'] = pictures_step(out, class_names, video, cfgs['tsm'],
                                        summary['prediction'], args.online)
    summary['parallel'] = parallel
    summary['seconds'] = round(time.time() - tic, 1)
    summary['machine'] = machine()
    with open(summary_path + '.tmp', 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2)
    os.replace(summary_path + '.tmp', summary_path)
    log_results(summary, video, cpus, summary_path, out)
    return summary


def data_step(data_dir, cfg, args):
    """[1/4]: the dataset, generated unless a matching one is there -> (info, spec)."""
    log(f"[1/4] data: {data_dir}")
    t = time.time()
    info, data_spec = generate_data(data_dir, cfg, args.quick, args.seed)
    log(f"    {'existing' if info['skipped'] else 'generated'}: "
        f"{data_spec['train_per_class'] * 8} training and {data_spec['val_per_class'] * 8} "
        f"held-out videos, {data_spec['size']}x{data_spec['size']} px, {data_spec['frames']} "
        f"frames ({time.time() - t:.0f} s)")
    return info, data_spec


def train_step(runner, cfgs, out, overrides, parallel, cpus, args):
    """[2/4]: train and evaluate TSM and TSN, side by side on half the CPUs each when
    `parallel` -> {key: summary entry}; the step that failed first raises."""
    threads = max(1, cpus // 2) if parallel else 0
    c = cfgs['tsm']
    log(f"[2/4] train and evaluate TSM and TSN {'side by side' if parallel else 'in turn'}: "
        f"{backbone_text(c.MODEL)}, {c.MODEL.seg_num} segments, "
        f"{c.TRAIN.target_size} px, {c.TRAIN.epoch} epoch{'s' * (c.TRAIN.epoch != 1)} from "
        f"scratch; shift_ratio "
        f"{c.MODEL.shift_ratio} vs {cfgs['tsn'].MODEL.shift_ratio}")
    results = {}
    with concurrent.futures.ThreadPoolExecutor(2 if parallel else 1) as pool:
        futures = {key: pool.submit(train_and_eval, runner, key, config, cfgs[key], out,
                                    overrides, threads, args) for key, config in MODELS}
        errors = []
        for key, fut in futures.items():
            try:
                results[key] = fut.result()
            except StepError as e:
                runner.fail()
                errors.append(e)
        if errors:  # the step that failed first, not the one stopped because of it
            raise next((e for e in errors if 'another step failed' not in str(e)), errors[0])
    return results


def predict_step(runner, out, video, true_name, overrides, online):
    """[3/4]: predict.py on one held-out video with the TSM weights -> its record."""
    log(f"[3/4] predict {os.path.relpath(video, out)} (true class: {true_name}) "
        f"with TSM{', online: one frame at a time' if online else ''}")
    prediction = predict(runner, out, video, overrides, online)
    prediction['true'] = true_name
    return prediction


def pictures_step(out, class_names, video, cfg, prediction, online):
    """[4/4]: the curves, both confusion matrices and the predicted video's frames
    -> {picture: file name}."""
    log("[4/4] pictures")
    import numpy as np
    from tools import plots
    top_name, top_prob = prediction['top_names'][0], prediction['top_probs'][0]
    pictures = {'curves': plots.plot_curves(
        {key.upper(): plots.load_history(os.path.join(out, key, 'history.json'))
         for key, _ in MODELS}, os.path.join(out, 'curves.png'), chance=1 / len(class_names),
        ceilings=[(0.5, 'frame-order-blind limit')])}
    for key, _ in MODELS:
        cm = np.load(os.path.join(out, key, 'eval', 'confusion.npy'))
        pictures[f'confusion_{key}'] = plots.plot_confusion(
            cm, class_names, os.path.join(out, f'confusion_{key}.png'),
            title=f"{key.upper()}, held-out videos", group=2)
    frames, indices = sampled_frames(video, cfg)
    pictures['predict_frames'] = plots.plot_contact_sheet(
        frames, indices, os.path.join(out, 'predict_frames.png'),
        title=f"TSM{' online, last frame' if online else ''}: {top_name} "
              f"(p={top_prob:.2f}); true class: {prediction['true']}")
    return {k: os.path.basename(v) for k, v in pictures.items()}


def log_results(summary, video, cpus, summary_path, out):
    """The closing table: each model's shift and accuracy, the prediction, the time."""
    prediction = summary['prediction']
    log()
    log(f"{'model':<6}{'shift':>7}{'top-1':>8}{'top-5':>8}{'train s':>9}   (held-out videos: "
        f"{summary['tsm']['num_videos']})")
    for key, _ in MODELS:
        s = summary[key]
        log(f"{key.upper():<6}{s['shift_ratio']:>7.3f}{s['top1']:>8.3f}{s['top5']:>8.3f}"
            f"{s['train_seconds']:>9.0f}")
    log(f"prediction: {os.path.basename(video)} -> {prediction['top_names'][0]} "
        f"(p={prediction['top_probs'][0]:.2f})")
    log(f"total {summary['seconds']:.0f} s on {cpus} CPU(s); {summary_path} and the pictures "
        f"in {out}")


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except StepError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == '__main__':
    main()
