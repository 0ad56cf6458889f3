"""Inference engines behind one small interface, one module per engine:

    eng = engine('openvino')   # the module; EngineError naming the pip package if absent
                               # or of a version this Paddle cannot use (unusable)
    artifact = eng.export(model, prefix, input_shape, formulation, batch, probabilities)
    runner = eng.load(artifact, threads=2, precision='bf16', batch=1)
    out = runner.run(x)        # float32 [B, T, 3L, S, S] -> [B, K] numpy, any B
    runner.describe()          # {'engine', 'version', 'precision', 'artifact', ...}
    eng.find(prefix)           # the artifact at prefix when complete, else None
    eng.versions()             # every package the artifact depends on -> version

  paddle       Paddle Inference + oneDNN (engines/paddle_engine.py): <prefix>.json + .pdiparams
  onnxruntime  ONNX Runtime (engines/ort_engine.py): <prefix>.onnx, by paddle2onnx
  openvino     OpenVINO (engines/openvino_engine.py): <prefix>.xml + .bin, by paddle2onnx
               then openvino.convert_model

`backend='auto'` (choose) takes the fastest installed (and usable) engine for the precision,
in FASTEST_FIRST.  inference/artifacts.py caches the exports and checks them
against the eager model.

May import: utils, models.
"""
import importlib
import importlib.util
import logging

logger = logging.getLogger(__name__)

# Nothing heavy is imported here: the flags (utils/cli.py) read these names at parse time.

MODULES = {'paddle': 'engines.paddle_engine', 'openvino': 'engines.openvino_engine',
           'onnxruntime': 'engines.ort_engine'}
BACKENDS = ('auto', 'paddle', 'openvino', 'onnxruntime')
PRECISIONS = ('fp32', 'bf16', 'int8')
# What each engine needs installed, import name -> pip package: checked before its module
# is imported, so that a missing one is named.
REQUIRES = {'paddle': {'paddle': 'paddlepaddle'},
            'onnxruntime': {'onnxruntime': 'onnxruntime', 'paddle2onnx': 'paddle2onnx'},
            'openvino': {'openvino': 'openvino', 'paddle2onnx': 'paddle2onnx'}}

# How each engine gets the model: the shift formulation of the export
# (models/shift_conv.py) and the clips per engine call of the cached export (None: any
# batch, fed whole).  Paddle: a fixed batch lets the frame moves be static slices.
# OpenVINO: dynamic-batch IR is compiled static anyway (engines/openvino_engine.py).
# ONNX Runtime: batch 1 is no faster than a dynamic batch (docs/engines.md).
FORMULATION = {'paddle': 'conv', 'onnxruntime': 'split', 'openvino': 'split'}
BATCH = {'paddle': 1, 'onnxruntime': None, 'openvino': 1}

# The engines, fastest first, per precision: 'auto' takes the first installed and usable
# one.  The order and the figures behind it (bench/shift_cost.py --mode engines):
# docs/engines.md.
# ONNX Runtime has no bf16 convolutions: its bf16 is its fp32.
FASTEST_FIRST = {
    'fp32': ('openvino', 'onnxruntime', 'paddle'),
    'bf16': ('openvino', 'paddle', 'onnxruntime'),
}



class EngineError(RuntimeError):
    """An engine this machine lacks (with the pip command), a precision it cannot run, or an
    export that does not compute what the eager model computes; one-line message."""

def missing(name):
    """The pip packages `name` needs that cannot be imported here."""
    return [pip for mod, pip in REQUIRES[name].items() if importlib.util.find_spec(mod) is None]


def unusable(name):
    """Why engine `name`, though installed, cannot convert this Paddle's programs (one line
    with the pip command), or None.  paddle2onnx 2.x reads Paddle 3's programs (.json) and
    refuses to import under Paddle 2; 1.x reads Paddle 2.6's .pdmodel only (and writes an
    empty file for a .json).  paddlepaddle-gpu 2.6.2 is the GPU wheel on PyPI."""
    if 'paddle2onnx' not in REQUIRES[name] or missing(name):
        return None
    from importlib.metadata import version
    import paddle
    found, p2o = paddle.__version__, version('paddle2onnx')
    paddle2, p2o_1 = found.startswith('2.'), p2o.startswith('1.')  # 0.0.0: a 3.x develop build
    if paddle2 and not p2o_1:
        return (f"paddle2onnx {p2o} needs paddlepaddle >= 3.0 (found {found}): "
                f"pip install 'paddle2onnx<2'")
    if p2o_1 and not paddle2:
        return (f"paddle2onnx {p2o} reads Paddle 2's programs, not those of paddlepaddle "
                f"{found}: pip install 'paddle2onnx>=2'")
    return None


def engine(name):
    """The engine module; EngineError with the pip command when a package is missing or
    unusable here."""
    if name not in MODULES:
        raise EngineError(f"unknown backend {name!r} (use one of {', '.join(BACKENDS)})")
    lacking = missing(name)
    if lacking:
        raise EngineError(f"--backend {name} needs {' and '.join(lacking)}, not installed: "
                          f"pip install {' '.join(lacking)}")
    reason = unusable(name)
    if reason:
        raise EngineError(f"--backend {name}: {reason}")
    try:
        return importlib.import_module(MODULES[name])
    except ImportError as e:  # installed but broken
        raise EngineError(f"--backend {name}: cannot import its engine ({e}); reinstall "
                          f"with pip install --force-reinstall "
                          f"{' '.join(REQUIRES[name].values())}") from None


def choose(backend, precision):
    """The engine name for --backend (`auto`: the fastest installed for `precision`,
    logged with the reason)."""
    if backend != 'auto':
        return backend
    ranked = FASTEST_FIRST.get(precision, FASTEST_FIRST['fp32'])
    absent = [n for n in ranked if missing(n)]
    broken = {n: why for n in ranked if n not in absent and (why := unusable(n))}
    name = next(n for n in ranked if n not in absent and n not in broken)  # paddle always is
    logger.info("backend auto: %s, the fastest installed engine for %s (fastest first: %s; "
                "docs/engines.md)%s", name, precision, ', '.join(ranked),
                f"; not installed: {', '.join(absent)}" if absent else '')
    for reason in dict.fromkeys(broken.values()):  # one line per reason
        logger.warning("backend auto: not %s: %s", ' or '.join(
            n for n in broken if broken[n] == reason), reason)
    return name
