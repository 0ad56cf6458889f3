"""Online TSM per frame on every engine and precision, beside the same engine's 8-frame clip,
the paper's figures, and the browser's camera mode end to end.

    python bench/online_latency.py [--config configs/tsm.yaml] [--quick]
        [--out bench/results/online_latency.json] [--engines openvino,onnxruntime,paddle]
        [--pairs 30] [--browser_seconds 20] [--camera_fps 30]

The model is the config's (MODEL.backbone, depth, classes, INFER.target_size), with
seeded random weights and calibrated BN (the time does not depend on the values).  Each
engine runs in a child process of its own, as a deployment holds one engine, and loads
the files inference_model.py writes the way a plain engine loads them (its own API, no
project code, no reshape: the batch is the file's, static 1 by default):
  - online: the per-frame model (inference_model.py --online), its states fed back;
  - clip: the offline model (inference_model.py), one clip of seg_num frames.
For each precision, --pairs pairs of (one online frame, one clip) run back to back in
alternating order (common.paired_ratio): frame_vs_clip is the median ratio (the floor is
1 / seg_num: the same 2D network on one frame instead of seg_num), frame_ms and clip_ms
the medians of the same runs.  The paper's figures (TSM, Lin, Gan and Han, 2019;
MobileNetV2-TSM compiled with TVM) stand beside them: 13 ms per frame on a Jetson Nano, 35
ms on a Galaxy Note8.

browser: serve.py (its default engine and precision) with the same weights, and headless
Chromium's fake camera streaming to the page's camera mode at --camera_fps for
--browser_seconds; answers_per_s is what the page shows (answers over its last 2 s),
model_ms the server's per-frame model time, averaged by the page.

The machine is shared: the load average at the start and after each engine is written
beside the figures.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import numpy as np  # noqa: E402

PAPER_MS = {'jetson_nano_tvm': 13, 'galaxy_note8_tvm': 35}
ENGINES = ('openvino', 'onnxruntime', 'paddle')
PRECISIONS = {'openvino': ('fp32', 'bf16'), 'onnxruntime': ('fp32',),
              'paddle': ('fp32', 'bf16')}
RESULTS = os.path.join(common.ROOT, 'bench', 'results')


# ---- plain engines: each engine's own API, as its documentation shows it ----

def plain_openvino(xml, precision, threads):
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(core.read_model(xml), 'CPU', {
        'INFERENCE_PRECISION_HINT': {'fp32': 'f32', 'bf16': 'bf16'}[precision],
        'INFERENCE_NUM_THREADS': threads, 'PERFORMANCE_HINT': 'LATENCY'})
    request = compiled.create_infer_request()
    shapes = [list(i.get_shape()) for i in compiled.inputs]
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


# ---- one engine, in its own process ----

def build_model(config, quick):
    """The config's model, seeded random weights, BN calibrated; -> (model, cfg)."""
    import paddle
    from models import get_model
    from utils.config_utils import apply_overrides, parse_config
    cfg = parse_config(config)
    if quick:
        apply_overrides(cfg, ['MODEL.num_layers=18', 'MODEL.num_classes=10',
                              'MODEL.seg_num=4', 'INFER.target_size=32'])
    paddle.seed(0)
    model = get_model('TSM', cfg, 'infer')
    size = cfg.INFER.target_size
    common.calibrate_bn(model, paddle.randn([1, cfg.MODEL.seg_num, 3, size, size]))
    return model, cfg


def export_both(model, cfg, engine, folder):
    """inference_model.py's two files for `engine` (default batch): -> {kind: path}."""
    import engines
    from engines.paddle_engine import ONLINE
    from utils.inference import export_artifact, input_shape_of
    batch = engines.BATCH[engine]
    paths = {}
    for kind, online in (('clip', False), ('online', True)):
        prefix = os.path.join(folder, f'{engine}_{kind}', 'TSM')
        paths[kind] = export_artifact(model, engine, prefix, input_shape_of(cfg, 'INFER', online),
                                      formulation=ONLINE if online else None, batch=batch)[0]
    return paths


def measure_engine(engine, config, quick, threads, pairs):
    """Rows {engine, precision, frame_ms, clip_ms, frame_vs_clip, ...} of one engine."""
    common.set_threads(threads)
    model, cfg = build_model(config, quick)
    rows = []
    with tempfile.TemporaryDirectory(prefix='tsm-online-bench-') as folder:
        t = time.perf_counter()
        paths = export_both(model, cfg, engine, folder)
        export_s = time.perf_counter() - t
        for precision in PRECISIONS[engine]:
            online, shapes = PLAIN[engine](paths['online'], precision, threads)
            clip, clip_shapes = PLAIN[engine](paths['clip'], precision, threads)
            rng = np.random.default_rng(0)
            frame = rng.standard_normal(concrete(shapes[0])).astype(np.float32)
            states = [np.zeros(concrete(s), np.float32) for s in shapes[1:]]
            x = rng.standard_normal(concrete(clip_shapes[0])).astype(np.float32)

            def step():
                nonlocal states
                out = online([frame, *states])
                states = out[1:]

            def run_clip():
                clip([x])

            for _ in range(3):  # warm: allocations, kernels
                step()
                run_clip()
            ratio, _ = common.paired_ratio(step, run_clip, pairs)
            frame_s, clip_s = common.interleaved({'frame': step, 'clip': run_clip},
                                                 reps=pairs, warmup=0)[0].values()
            rows.append({'engine': engine, 'precision': precision,
                         'frame_ms': round(1000 * frame_s, 2), 'clip_ms': round(1000 * clip_s, 2),
                         'frame_vs_clip': round(ratio, 3), 'floor': round(1 / cfg.MODEL.seg_num, 3),
                         'frames_per_s': round(1 / frame_s, 1), 'states': len(shapes) - 1,
                         'export_s': round(export_s, 1),
                         'load_avg_1min': round(os.getloadavg()[0], 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


# ---- the browser's camera mode ----

def browser_answers(config, quick, seconds, camera_fps):
    """serve.py + headless Chromium's fake camera -> the page's answers/s and model ms."""
    from server.harness import CHROMIUM_HINT, Served, chromium, chromium_driver
    if chromium() is None:
        return {'skipped': CHROMIUM_HINT}
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from utils import checkpoint
    with tempfile.TemporaryDirectory(prefix='tsm-online-browser-') as folder:
        model, cfg = build_model(config, quick)
        weights = os.path.join(folder, 'w.pdparams')
        checkpoint.save_weights(model, weights)
        overrides = (['-o', 'MODEL.num_layers=18', '-o', 'MODEL.num_classes=10', '-o',
                      'MODEL.seg_num=4', '-o', 'INFER.target_size=32', '-o',
                      'INFER.short_size=36'] if quick else [])
        labels = os.path.join(folder, 'labels.txt')
        with open(labels, 'w') as f:
            f.write(''.join(f'class{i}\n' for i in range(cfg.MODEL.num_classes)))
        server = Served(['--config', config, '--weights', weights, '-o',
                         f'INFER.kinetics_labels={labels}', *overrides],
                        env={'TSM_PADDLE_CACHE': os.path.join(folder, 'cache')},
                        timeout=1200).wait()
        d = chromium_driver(fake_camera=True)
        try:
            d.get(server.url + '/')
            WebDriverWait(d, 60).until(lambda d: 'TSM' in d.find_element(By.ID, 'model-info').text)
            fps = d.find_element(By.ID, 'cam-fps')
            fps.clear()
            fps.send_keys(str(camera_fps))
            d.find_element(By.ID, 'cam-start').click()
            stats = lambda: d.find_element(By.ID, 'online-stats')  # noqa: E731
            WebDriverWait(d, 120).until(lambda d: int(stats().get_attribute('data-answered')
                                                      or 0) >= 5)
            first = int(stats().get_attribute('data-answered'))
            t = time.perf_counter()
            samples = []
            while time.perf_counter() - t < seconds:
                time.sleep(1)
                samples.append(float(stats().get_attribute('data-per-second')))
            answered = int(stats().get_attribute('data-answered')) - first
            elapsed = time.perf_counter() - t
            model_ms = float(stats().get_attribute('data-model-ms'))
            text = stats().text
            d.find_element(By.ID, 'cam-stop').click()
            import requests
            info = requests.get(server.url + '/v1/model', timeout=30).json()['online']
        finally:
            d.quit()
            server.stop()
    return {'camera_fps': camera_fps, 'seconds': round(elapsed, 1),
            'answers_per_s': round(answered / elapsed, 2),
            'page_answers_per_s_median': round(statistics.median(samples), 2),
            'model_ms': round(model_ms, 2), 'page_text': text,
            'engine': info.get('engine'), 'load_avg_1min': round(os.getloadavg()[0], 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default=os.path.join(common.ROOT, 'configs', 'tsm.yaml'))
    p.add_argument('--quick', action='store_true', help='ResNet-18, 32 px: a smoke run')
    p.add_argument('--out', default=None, help='JSON file (default bench/results/'
                                               'online_latency_<config name>.json)')
    p.add_argument('--engines', default=','.join(ENGINES))
    p.add_argument('--pairs', type=int, default=30)
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: all available)')
    p.add_argument('--browser_seconds', type=float, default=20, help='0: no browser run')
    p.add_argument('--camera_fps', type=int, default=30)
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    pairs = 3 if args.quick else args.pairs
    if args.child:
        common.write_json(args.out, {'rows': measure_engine(args.child, args.config, args.quick,
                                                            threads, pairs)})
        return
    name = os.path.splitext(os.path.basename(args.config))[0]
    out = args.out or os.path.join(RESULTS, f'online_latency_{name}.json')
    machine = common.machine_info()
    rows = []
    for engine in args.engines.split(','):
        child = os.path.join(tempfile.gettempdir(), f'tsm_online_{os.getpid()}_{engine}.json')
        cmd = [sys.executable, os.path.abspath(__file__), '--child', engine, '--config',
               args.config, '--out', child, '--threads', str(threads), '--pairs', str(pairs)]
        res = subprocess.run(cmd + (['--quick'] if args.quick else []), cwd=common.ROOT,
                             capture_output=True, text=True, timeout=3600)
        if res.returncode != 0:
            raise RuntimeError(f"{engine} failed:\n{res.stderr[-3000:]}")
        with open(child, encoding='utf-8') as f:
            rows += json.load(f)['rows']
        os.remove(child)
        print('\n'.join(json.dumps(r) for r in rows if r['engine'] == engine), flush=True)
    browser = (browser_answers(args.config, args.quick, args.browser_seconds, args.camera_fps)
               if args.browser_seconds > 0 else {'skipped': '--browser_seconds 0'})
    print('browser:', json.dumps(browser), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    common.write_json(out, {'machine': machine, 'config': os.path.relpath(args.config, common.ROOT),
                            'quick': args.quick, 'threads': threads, 'pairs': pairs,
                            'paper_ms': PAPER_MS, 'rows': rows, 'browser': browser,
                            'load_avg_at_end': os.getloadavg(),
                            'command': ' '.join(['python', 'bench/online_latency.py'] +
                                                (argv or sys.argv[1:]))})
    print(f"wrote {out}")


if __name__ == '__main__':
    main()
