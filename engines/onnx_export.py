"""The model as ONNX through paddle2onnx, Paddle's own route to ONNX Runtime and OpenVINO
(OpenVINO does not read Paddle 3's PIR programs; paddle2onnx does): the Paddle export
(engines/paddle_engine.py) converted, with the same input 'image' and output."""
import contextlib
import logging
import os
import shutil
import sys
import tempfile

from engines import paddle_engine
from engines.base import EngineError

logger = logging.getLogger(__name__)

OPSET = 13


def versions():
    import paddle2onnx
    return {**paddle_engine.versions(), 'paddle2onnx': paddle2onnx.__version__}


@contextlib.contextmanager
def captured_output():
    """paddle2onnx and Polygraphy print their progress to the process's stdout/stderr
    (C++ and Python): collect it (-> list of lines) for the debug log and errors."""
    lines = []
    with tempfile.TemporaryFile(mode='w+b') as sink:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
            yield lines
        finally:
            sys.stdout.flush()  # Python's buffered prints still belong to the sink
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
            sink.seek(0)
            lines.extend(sink.read().decode('utf-8', 'replace').splitlines())


def convert(prefix, onnx_file, fold=True):
    """A jit.save'd program (its prefix) -> onnx_file.  fold: Polygraphy folds the
    constants (paddle2onnx 2.x's default: a clean graph, which ONNX Runtime loads without
    warnings; it takes seconds, mostly importing Polygraphy: docs/engines.md); OpenVINO's
    converter folds them itself.  paddle2onnx 1.x (Paddle 2.6's .pdmodel,
    engines.unusable) has no optimize_tool: only its own C++ optimizer runs
    (enable_optimize)."""
    import paddle2onnx
    program, params = paddle_engine.program_files(prefix)
    options = {} if paddle2onnx.__version__.startswith('1.') else {
        'optimize_tool': 'polygraphy' if fold else None}
    with captured_output() as lines:
        try:
            paddle2onnx.export(program, params, onnx_file, opset_version=OPSET, **options)
        except Exception as e:  # noqa: BLE001  paddle2onnx raises whatever its C++ did
            lines.append(f"{type(e).__name__}: {e}")
    logger.debug("paddle2onnx:\n%s", '\n'.join(lines))
    if not os.path.isfile(onnx_file) or not os.path.getsize(onnx_file):  # 1.x: empty
        last = next((ln for ln in reversed(lines) if ln.strip()), 'no message')
        raise EngineError(f"paddle2onnx {paddle2onnx.__version__} could not convert {program} "
                          f"to ONNX: {last.strip()[:300]}")
    return onnx_file


# The per-frame model's shifts (models/online.py OnlineStep): 'split' leaves ResNet-50 per
# frame close to the 2D network alone in OpenVINO and ONNX Runtime, slice + concat does not
# (docs/online.md#how-the-per-frame-model-is-exported).
ONLINE_FORMULATION = 'split'


def export(model, onnx_file, input_shape, formulation='split', batch=None,
           probabilities=False, fold=True):
    """`model` exported for Paddle (in a temporary folder beside onnx_file), then
    converted; -> onnx_file."""
    tmp = tempfile.mkdtemp(prefix='.paddle-', dir=os.path.dirname(os.path.abspath(onnx_file)))
    try:
        prefix = paddle_engine.export(model, os.path.join(tmp, 'model'), input_shape,
                                      formulation, batch, probabilities, ONLINE_FORMULATION)
        convert(prefix, onnx_file, fold)
        if formulation == paddle_engine.ONLINE:
            name_outputs(onnx_file)
        return onnx_file
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def name_outputs(onnx_file):
    """The online model's outputs renamed logits, new_state_0 ... (Paddle names them
    fetch_name_i); rewritten in place."""
    import onnx
    from models.online import output_names
    model = onnx.load(onnx_file)
    graph = model.graph
    renames = dict(zip([o.name for o in graph.output], output_names(len(graph.output) - 1)))
    for node in graph.node:
        node.output[:] = [renames.get(n, n) for n in node.output]
        node.input[:] = [renames.get(n, n) for n in node.input]
    for out in graph.output:
        out.name = renames[out.name]
    onnx.save(model, onnx_file)
