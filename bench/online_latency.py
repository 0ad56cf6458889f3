"""Online TSM per frame on every engine and precision, beside the same engine's 8-frame clip,
the paper's figures, the cost of a dynamic batch in OpenVINO IR, and the browser's camera
mode end to end; the issue's targets checked on the figures of the one run.

    python bench/online_latency.py [--quick] [--models resnet50,mobilenetv2]
        [--engines openvino,onnxruntime,paddle] [--threads 2] [--pairs 30]
        [--browser_seconds 20] [--camera_fps 30] [--out FILE]

Models (MODELS): ResNet-50 TSM (configs/tsm.yaml) and MobileNetV2-TSM (the online demo's
configs/tsm_mobilenetv2_jester_online.yaml, the paper's online model), with seeded random
weights and calibrated BN (the time does not depend on the values).  Each model x engine
runs in a child process of its own, as a deployment holds one engine, on --threads threads
(OMP_NUM_THREADS and the engine's own thread setting), and loads the files
inference_model.py writes the way a plain engine loads them (its own API, no project code,
no reshape: the batch is the file's, engines.BATCH by default):
  - online: the per-frame model (inference_model.py --online), its states fed back;
  - clip: the offline model (inference_model.py), one clip of seg_num frames.
For each precision, --pairs pairs of (one online frame, one clip) run back to back in
alternating order (common.paired_ratio), each after SETTLE untimed calls: frame_vs_clip
is the median ratio (the floor is 1 / seg_num: the same 2D network on one frame instead of
seg_num), frame_ms and clip_ms the medians of the same runs.  stream_frame_ms: the same
frame through the project's own path (the engine's runner in an OnlineStream, as
predict.py --online and the server run it).
The paper's figures (TSM, Lin, Gan and Han, 2019; MobileNetV2-TSM compiled with TVM) stand
beside them: 13 ms per frame on a Jetson Nano, 35 ms on a Galaxy Note8.

openvino_batch (OpenVINO only): TSN (shift_ratio 0) and TSM clips, and the online model,
exported with a static batch 1 (the default) and a dynamic one (--batch -1), each loaded
as written: shift_overhead is TSM over TSN in rounds TSN TSM TSN ... (common.bracketed),
online_dynamic_vs_static the per-frame time of the dynamic file over the static one.

browser: serve.py (its default engine and precision, --cpu_threads --threads) with
MobileNetV2's weights, and headless Chromium's fake camera streaming to the page's camera
mode at --camera_fps for --browser_seconds; answers_per_s is answers over that time,
model_ms the server's per-frame model time, averaged by the page.

The machine may be shared: lscpu's model name, and the load average at the start, after
each child and at the end are written beside the figures.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

# The engines' thread settings as a plain deployment has them: common sets OpenMP's idle
# threads to sleep (KMP_BLOCKTIME 0, OMP_WAIT_POLICY PASSIVE), which cost Paddle's per-frame
# model, many short parallel regions, about 40 %; the settle calls before each timed one
# keep the other model's spinning threads out instead.
OWN_ENV = {k: os.environ.get(k) for k in ('KMP_BLOCKTIME', 'OMP_WAIT_POLICY')}
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the root
from bench import common  # noqa: E402
from testing.models import calibrate_bn  # noqa: E402

for _key, _value in OWN_ENV.items():
    if _value is None:
        os.environ.pop(_key, None)

import numpy as np  # noqa: E402

PAPER_MS = {'jetson_nano_tvm': 13, 'galaxy_note8_tvm': 35}
MODELS = {'resnet50': 'configs/tsm.yaml',
          'mobilenetv2': 'configs/tsm_mobilenetv2_jester_online.yaml'}
QUICK = ['MODEL.num_layers=18', 'MODEL.num_classes=10', 'MODEL.seg_num=4',
         'INFER.target_size=64', 'INFER.short_size=72']
ENGINES = ('openvino', 'onnxruntime', 'paddle')
PRECISIONS = {'openvino': ('fp32', 'bf16'), 'onnxruntime': ('fp32',),
              'paddle': ('fp32', 'bf16')}
TARGETS = {'mobilenetv2_frame_ms': 10, 'resnet50_frame_vs_clip': 0.2,
           'browser_answers_per_s': 25}
# Untimed calls before each timed one in a pair: the first call after the other model's
# pays for its threads still spinning (ONNX Runtime's pool) and the caches it filled.
SETTLE = 2


# ---- plain engines: each engine's own API, as its documentation shows it ----

def plain_openvino(xml, precision, threads):
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(core.read_model(xml), 'CPU', {
        'INFERENCE_PRECISION_HINT': {'fp32': 'f32', 'bf16': 'bf16'}[precision],
        'INFERENCE_NUM_THREADS': threads, 'PERFORMANCE_HINT': 'LATENCY'})
    request = compiled.create_infer_request()
    shapes = [[d.get_length() if d.is_static else -1 for d in i.get_partial_shape()]
              for i in compiled.inputs]
    return lambda arrays: list(request.infer(arrays).values()), shapes


def plain_onnxruntime(onnx_file, precision, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(onnx_file, opts, providers=['CPUExecutionProvider'])
    names = [i.name for i in sess.get_inputs()]
    shapes = [i.shape for i in sess.get_inputs()]
    return lambda arrays: sess.run(None, dict(zip(names, arrays))), shapes


def plain_paddle(prefix, precision, threads):
    import paddle.inference as pi
    program = prefix + ('.json' if os.path.exists(prefix + '.json') else '.pdmodel')
    config = pi.Config(program, prefix + '.pdiparams')
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(threads)
    if precision == 'bf16':
        config.enable_mkldnn_bfloat16()
    config.disable_glog_info()
    predictor = pi.create_predictor(config)
    inputs = [predictor.get_input_handle(n) for n in predictor.get_input_names()]
    outputs = [predictor.get_output_handle(n) for n in predictor.get_output_names()]
    shapes = [h.shape() for h in inputs]

    def run(arrays):
        for h, x in zip(inputs, arrays):
            h.reshape(list(x.shape))
            h.copy_from_cpu(x)
        predictor.run()
        return [h.copy_to_cpu() for h in outputs]
    return run, shapes


PLAIN = {'openvino': plain_openvino, 'onnxruntime': plain_onnxruntime, 'paddle': plain_paddle}


def concrete(shape):
    """An input's shape with a dynamic batch (None, -1, a name) as 1."""
    return [d if isinstance(d, int) and d > 0 else 1 for d in shape]


def plain_online(path, engine, precision, threads):
    """A plain engine stepping the online file from zero states -> a no-argument step."""
    online, shapes = PLAIN[engine](path, precision, threads)
    frame = np.random.default_rng(0).standard_normal(concrete(shapes[0])).astype(np.float32)
    states = [np.zeros(concrete(s), np.float32) for s in shapes[1:]]

    def step():
        nonlocal states
        states = online([frame, *states])[1:]
    return step, len(shapes) - 1


def plain_clip(path, engine, precision, threads):
    """A plain engine running one clip of the offline file -> a no-argument call."""
    clip, shapes = PLAIN[engine](path, precision, threads)
    x = np.random.default_rng(0).standard_normal(concrete(shapes[0])).astype(np.float32)
    return lambda: clip([x])


# ---- one model on one engine, in its own process ----

def build_model(config, quick, overrides=()):
    """The config's model, seeded random weights, BN calibrated; -> (model, cfg)."""
    import paddle
    from models import get_model
    from utils.config_utils import apply_overrides, parse_config
    cfg = parse_config(os.path.join(common.ROOT, config))
    apply_overrides(cfg, (QUICK if quick else []) + list(overrides))
    paddle.seed(0)
    model = get_model('TSM', cfg, 'infer')
    size = cfg.INFER.target_size
    calibrate_bn(model, paddle.randn([1, cfg.MODEL.seg_num, 3, size, size]))
    return model, cfg


def export(model, cfg, engine, prefix, online, batch):
    """inference_model.py's file (checked against the eager model) -> its path."""
    from engines.paddle_engine import ONLINE
    from inference.artifacts import export_artifact
    from reader import clip_shape
    return export_artifact(model, engine, prefix, clip_shape(cfg, 'INFER', online=online),
                           formulation=ONLINE if online else None, batch=batch)[0]


def export_both(model, cfg, engine, folder, batch):
    """The offline and the online file for `engine` -> {'clip': path, 'online': path}."""
    return {kind: export(model, cfg, engine, os.path.join(folder, f'{engine}_{kind}_{batch}',
                                                          'TSM'), kind == 'online', batch)
            for kind in ('clip', 'online')}


def stream_step(model, cfg, engine, path, precision, threads):
    """The project's path: the engine's runner in an OnlineStream -> a no-argument step."""
    import engines
    from models.online import OnlineStream
    from inference.artifacts import runner_step, state_shapes_of
    from reader import clip_shape
    shape = clip_shape(cfg, 'INFER', online=True)
    runner = engines.engine(engine).load(path, threads, precision, engines.BATCH[engine])
    stream = OnlineStream(runner_step(runner), state_shapes_of(model, shape),
                          window=cfg.MODEL.seg_num)
    frame = np.random.default_rng(1).standard_normal([1, *shape]).astype(np.float32)
    return lambda: stream.step(frame)


def measure_precision(model, cfg, engine, paths, precision, threads, pairs):
    """One row: online frame, clip and the project's stream step on one precision."""
    step, states = plain_online(paths['online'], engine, precision, threads)
    clip = plain_clip(paths['clip'], engine, precision, threads)
    stream = stream_step(model, cfg, engine, paths['online'], precision, threads)
    for _ in range(3):  # warm: allocations, kernels
        step(), clip(), stream()
    times = {}
    ratio, _ = common.paired_ratio(step, clip, pairs, times, settle=SETTLE)
    frame_s, clip_s = statistics.median(times['a']), statistics.median(times['b'])
    stream_s = common.interleaved({'stream': stream}, reps=pairs, warmup=0)[0]['stream']
    return {'precision': precision, 'frame_ms': round(1000 * frame_s, 2),
            'clip_ms': round(1000 * clip_s, 2), 'frame_vs_clip': round(ratio, 3),
            'floor': round(1 / cfg.MODEL.seg_num, 3), 'frames_per_s': round(1 / frame_s, 1),
            'stream_frame_ms': round(1000 * stream_s, 2), 'states': states,
            'load_avg_1min': round(os.getloadavg()[0], 2)}


def measure_engine(engine, name, quick, threads, pairs):
    """Rows {model, engine, precision, frame_ms, clip_ms, frame_vs_clip, ...} of one
    engine, and (OpenVINO) the static against the dynamic batch."""
    import engines
    common.set_threads(threads)
    model, cfg = build_model(MODELS[name], quick)
    batch = engines.BATCH[engine]
    out = {'rows': [], 'threads': threads, 'omp_num_threads': os.environ['OMP_NUM_THREADS'],
           'omp_env': {k: os.environ.get(k) for k in OWN_ENV}}
    with tempfile.TemporaryDirectory(prefix='tsm-online-bench-') as folder:
        t = time.perf_counter()
        paths = export_both(model, cfg, engine, folder, batch)
        export_s = round(time.perf_counter() - t, 1)
        for precision in [p for p in PRECISIONS[engine] if p in common.precisions(quick)]:
            row = measure_precision(model, cfg, engine, paths, precision, threads, pairs)
            out['rows'].append({'model': name, 'engine': engine, 'batch': batch or 'dynamic',
                                'export_s': export_s, **row})
            print(json.dumps(out['rows'][-1]), flush=True)
        if engine == 'openvino':
            out['openvino_batch'] = openvino_batch(model, cfg, name, quick, paths, folder,
                                                   threads, pairs)
    return out


def openvino_batch(model, cfg, name, quick, static, folder, threads, pairs):
    """TSM over TSN and the online frame, static batch 1 against dynamic, as written."""
    tsn, _ = build_model(MODELS[name], quick, ['MODEL.shift_ratio=0'])
    files = {'static': {'tsm': static['clip'], 'online': static['online']},
             'dynamic': {'tsm': export(model, cfg, 'openvino', os.path.join(
                 folder, 'dyn_tsm', 'TSM'), False, None),
                 'online': export(model, cfg, 'openvino', os.path.join(
                     folder, 'dyn_online', 'TSM'), True, None)}}
    for form, batch in (('static', 1), ('dynamic', None)):
        files[form]['tsn'] = export(tsn, cfg, 'openvino', os.path.join(folder, f'tsn_{form}',
                                                                       'TSN'), False, batch)
    result = {}
    for precision in [p for p in PRECISIONS['openvino'] if p in common.precisions(quick)]:
        row = {}
        for form, f in files.items():
            tsn_fn, tsm_fn = (plain_clip(f[k], 'openvino', precision, threads)
                              for k in ('tsn', 'tsm'))
            timed = common.bracketed(tsn_fn, {'tsm': tsm_fn}, pairs)
            row[form] = {'tsn_ms': round(1000 * timed['base']['median_s'], 2),
                         'tsm_ms': round(1000 * timed['tsm']['median_s'], 2),
                         'shift_overhead': round(timed['tsm']['ratio'] - 1, 3),
                         'ratio_quartiles': [round(timed['tsm'][q], 3) for q in ('q1', 'q3')]}
        static_step = plain_online(files['static']['online'], 'openvino', precision, threads)[0]
        dynamic_step = plain_online(files['dynamic']['online'], 'openvino', precision, threads)[0]
        for _ in range(3):
            static_step(), dynamic_step()
        times = {}
        ratio, _ = common.paired_ratio(dynamic_step, static_step, pairs, times, settle=SETTLE)
        row['online'] = {'dynamic_ms': round(1000 * statistics.median(times['a']), 2),
                         'static_ms': round(1000 * statistics.median(times['b']), 2),
                         'dynamic_vs_static': round(ratio, 3)}
        result[precision] = row
        print(name, precision, json.dumps(row), flush=True)
    return result


# ---- the browser's camera mode ----

def serve_model(folder, name, quick, threads):
    """serve.py on `name`'s seeded weights (default engine and precision) -> Served."""
    from testing.served import Served
    from training import checkpoint
    model, cfg = build_model(MODELS[name], quick)
    weights = os.path.join(folder, 'w.pdparams')
    checkpoint.save_weights(model, weights)
    labels = os.path.join(folder, 'labels.txt')
    with open(labels, 'w') as f:
        f.write(''.join(f'class{i}\n' for i in range(cfg.MODEL.num_classes)))
    overrides = [a for o in QUICK if quick for a in ('-o', o)]
    return Served(['--config', MODELS[name], '--weights', weights, '--cpu_threads',
                   str(threads), '-o', f'INFER.kinetics_labels={labels}', *overrides],
                  env={'TSM_PADDLE_CACHE': os.path.join(folder, 'cache')},
                  timeout=1200).wait()


def camera_answers(d, camera_fps, seconds):
    """Start the page's camera mode at `camera_fps`; after 5 answers, count for
    `seconds` -> the figures the page shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    fps = d.find_element(By.ID, 'cam-fps')
    fps.clear()
    fps.send_keys(str(camera_fps))
    d.find_element(By.ID, 'cam-start').click()
    stats = lambda: d.find_element(By.ID, 'online-stats')  # noqa: E731
    WebDriverWait(d, 120).until(lambda d: int(stats().get_attribute('data-answered') or 0) >= 5)
    first = int(stats().get_attribute('data-answered'))
    t = time.perf_counter()
    samples = []
    while time.perf_counter() - t < seconds:
        time.sleep(1)
        samples.append(float(stats().get_attribute('data-per-second')))
    answered = int(stats().get_attribute('data-answered')) - first
    elapsed = time.perf_counter() - t
    result = {'camera_fps': camera_fps, 'seconds': round(elapsed, 1),
              'answers_per_s': round(answered / elapsed, 2),
              'page_answers_per_s_median': round(statistics.median(samples), 2),
              'model_ms': round(float(stats().get_attribute('data-model-ms')), 2),
              'page_text': stats().text}
    d.find_element(By.ID, 'cam-stop').click()
    return result


def browser_answers(name, quick, seconds, camera_fps, threads):
    """serve.py + headless Chromium's fake camera -> the page's answers/s and model ms."""
    from testing.browser import CHROMIUM_HINT, chromium, chromium_driver
    if chromium() is None:
        return {'skipped': CHROMIUM_HINT}
    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    with tempfile.TemporaryDirectory(prefix='tsm-online-browser-') as folder:
        server = serve_model(folder, name, quick, threads)
        d = chromium_driver(fake_camera=True)
        try:
            d.get(server.url + '/')
            WebDriverWait(d, 60).until(lambda d: 'TSM' in d.find_element(By.ID, 'model-info').text)
            result = camera_answers(d, camera_fps, seconds)
            engine = requests.get(server.url + '/v1/model', timeout=30).json()['online']
        finally:
            d.quit()
            server.stop()
    return {'model': name, **result, 'engine': engine, 'server_threads': threads,
            'load_avg_1min': round(os.getloadavg()[0], 2)}


# ---- the parent ----

def default_engine():
    """(engine, precision) that predict.py and serve.py take by default."""
    import engines
    from engines.base import default_precision
    precision = default_precision()
    return engines.choose('auto', precision), precision


def targets(rows, browser, quick):
    """The issue's targets on this run's figures (quick: the code path only)."""
    engine, precision = default_engine()
    pick = {(r['model'], r['engine'], r['precision']): r for r in rows}
    mbv2 = pick.get(('mobilenetv2', engine, precision), {})
    r50 = pick.get(('resnet50', engine, precision), {})
    found = {'default': {'engine': engine, 'precision': precision}, 'quick': quick,
             'mobilenetv2_frame_ms': mbv2.get('frame_ms'),
             'resnet50_frame_vs_clip': r50.get('frame_vs_clip'),
             'resnet50_frame_vs_clip_every_engine': {
                 f"{r['engine']} {r['precision']}": r['frame_vs_clip']
                 for r in rows if r['model'] == 'resnet50'},
             'browser_answers_per_s': browser.get('answers_per_s'), 'limits': TARGETS}
    met = {'mobilenetv2_frame_ms': lambda v, lim: v <= lim,
           'resnet50_frame_vs_clip': lambda v, lim: v <= lim,
           'browser_answers_per_s': lambda v, lim: v >= lim}
    found['met'] = {k: found[k] is not None and met[k](found[k], lim)
                    for k, lim in TARGETS.items()}
    return found


def run_child(name, engine, args, threads, pairs):
    """One model on one engine in a fresh process (--quick: in this one) -> its output."""
    if args.quick:
        return measure_engine(engine, name, True, threads, pairs)
    flags = ['--child', engine, '--models', name, '--threads', str(threads), '--pairs',
             str(pairs)] + (['--quick'] if args.quick else [])
    return common.run_script('online_latency', flags, timeout=3600)


def parse_args(argv=None):
    p = common.base_args(__doc__)
    p.add_argument('--models', default=None,
                   help=f"comma-separated (default {','.join(MODELS)}; --quick: resnet50)")
    p.add_argument('--engines', default=None,
                   help=f"comma-separated (default {','.join(ENGINES)}; --quick: paddle)")
    p.add_argument('--pairs', type=int, default=30)
    p.add_argument('--browser_seconds', type=float, default=None,
                   help='0: no browser run (default 20; --quick: 0)')
    p.add_argument('--camera_fps', type=int, default=30)
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick  # a smoke run: one model on one engine, no browser
    args.models = args.models or ('resnet50' if quick else ','.join(MODELS))
    args.engines = args.engines or ('paddle' if quick else ','.join(ENGINES))
    if args.browser_seconds is None:
        args.browser_seconds = 0 if quick else 20
    return args


def measure(args):
    """{'online': the figures of the docstring}."""
    threads = args.threads or len(os.sched_getaffinity(0))
    pairs = 3 if args.quick else args.pairs
    rows, batch, loads = [], {}, {}
    for name in args.models.split(','):
        for engine in args.engines.split(','):
            data = run_child(name, engine, args, threads, pairs)
            rows += data['rows']
            if 'openvino_batch' in data:
                batch[name] = data['openvino_batch']
            loads[f'{name} {engine}'] = round(os.getloadavg()[0], 2)
    browser = (browser_answers('mobilenetv2', args.quick, args.browser_seconds,
                               args.camera_fps, threads)
               if args.browser_seconds > 0 and 'mobilenetv2' in args.models
               else {'skipped': 'no browser run'})
    print('browser:', json.dumps(browser), flush=True)
    return {'online': {
        'models': {n: MODELS[n] for n in args.models.split(',')},
        'quick': args.quick, 'threads': threads, 'omp_num_threads': threads,
        'omp_env': {k: os.environ.get(k) for k in OWN_ENV}, 'pairs': pairs,
        'paper_ms': PAPER_MS, 'rows': rows, 'openvino_batch': batch, 'browser': browser,
        'targets': targets(rows, browser, args.quick), 'load_avg_after': loads,
        'load_avg_at_end': os.getloadavg()}}


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        threads = args.threads or len(os.sched_getaffinity(0))
        common.write_json(args.out, measure_engine(args.child, args.models, args.quick,
                                                   threads, 3 if args.quick else args.pairs))
        return
    common.save(measure(args), args)


if __name__ == '__main__':
    main()
