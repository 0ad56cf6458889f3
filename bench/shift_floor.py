"""What the shift can cost at least on OpenVINO, the default engine: where the split
formulation's overhead comes from, and what an engine extension would cost instead.

    python bench/shift_floor.py [--quick] [--pairs 30] --out shift_floor.json

One process, OpenVINO only, R50 TSM 8x224 one clip (--quick: R18 at 32 px), every
precision the CPU runs (fp32; bf16 on AVX512-BF16/AMX).  Four programs, all from the
engine's own export (engines/openvino_engine.py) of the same weights:

  tsn          the TSM with its shifts switched off (set_shift(0)): the cost floor.
  split        the default export (engines.FORMULATION['openvino']).
  no_moves     the split export with every frame move left out (common.
               export_split_without_moves): wrong outputs; against tsn, what the split
               layout alone costs (more convolution calls, residual sums, dispatch).
  extension    tsn with a TemporalShift custom op (openvino.Op, evaluate in numpy) before
               the first convolution of each block: the shift as an engine extension.
               Its outputs equal the eager TSM's (checked in fp32: ext_probs_max_abs_diff).

Times: common.bracketed (each program against the mean of the tsn runs either side, median
over --pairs rounds).  -> overhead_no_moves and overhead_extension {precision: ratio - 1};
per precision: overhead[name] = ratio - 1 and its quartiles, and
per_node_ms: OpenVINO's own per-node times (PERF_COUNT, minimum over runs, summed by
node type), for tsn, split and extension: the extension runs as a 'Reference' node in
f32 and plain layout, so reorders out of and back into the convolutions' layout
surround it; 'Reorder' there is what a C++ extension would pay as well.
"""
import argparse
import collections
import copy
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from shift_engines import sizes, softmax, tsm_and_clip  # noqa: E402

import numpy as np  # noqa: E402


def shift_op_class():
    """The temporal shift (the 'paddle' direction of models/temporal_shift.py, one clip
    [T, C, H, W]) as an OpenVINO custom op."""
    from openvino import Op

    class TemporalShift(Op):
        def __init__(self, inputs=None, shift_ratio=0.125):
            super().__init__(self, inputs)
            self.shift_ratio = shift_ratio
            self.constructor_validate_and_infer_types()

        def validate_and_infer_types(self):
            self.set_output_type(0, self.get_input_element_type(0),
                                 self.get_input_partial_shape(0))

        def clone_with_new_inputs(self, new_inputs):
            return TemporalShift(new_inputs, self.shift_ratio)

        def visit_attributes(self, visitor):
            return True

        def has_evaluate(self):
            return True

        def evaluate(self, outputs, inputs):
            x, y = inputs[0].data, outputs[0].data  # [T, C, H, W] each
            c1, c2 = int(x.shape[1] * self.shift_ratio), int(x.shape[1] * 2 * self.shift_ratio)
            y[...] = x
            y[1:, :c1], y[:1, :c1] = x[:-1, :c1], 0  # from frame t-1
            y[:-1, c1:c2], y[-1:, c1:c2] = x[1:, c1:c2], 0  # from frame t+1
            return True

    return TemporalShift


def first_convolutions(model):
    """The convolution that opens each block of an exported TSN: a Convolution whose
    input also feeds another consumer (the shortcut) and whose output reaches another
    Convolution through bias Adds and Relus only (the shortcut's reaches the residual sum)."""
    def reaches_conv(node):
        for _ in range(4):
            outs = [t.get_node() for t in node.output(0).get_target_inputs()]
            if len(outs) != 1:
                return False
            node = outs[0]
            kind = node.get_type_name()
            if kind == 'Convolution':
                return True
            consts = [i.get_source_output().get_node().get_type_name() == 'Constant'
                      for i in node.inputs()]
            if not (kind == 'Relu' or (kind == 'Add' and any(consts))):
                return False
        return False

    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != 'Convolution':
            continue
        shared = len(op.input(0).get_source_output().get_target_inputs()) > 1
        if shared and reaches_conv(op):
            found.append(op)
    return found


def with_extension(xml, shift_ratio):
    """The TSN IR at `xml` with a TemporalShift before each block's first convolution."""
    import openvino as ov
    model = ov.Core().read_model(xml)
    shift = shift_op_class()
    convs = first_convolutions(model)
    for conv in convs:
        conv.input(0).replace_source_output(
            shift([conv.input(0).get_source_output()], shift_ratio).output(0))
    return model, len(convs)


def per_node_ms(request, x, runs):
    """{node type: summed minimum ms over `runs`} from OpenVINO's own counters."""
    best = {}
    for _ in range(runs):
        request.infer({0: x})
        for p in request.get_profiling_info():
            key = (p.node_name, p.node_type)
            best[key] = min(best.get(key, 1e9), p.real_time.total_seconds() * 1e3)
    total = collections.defaultdict(float)
    for (_, kind), ms in best.items():
        total[kind] += ms
    return {k: round(v, 3) for k, v in sorted(total.items(), key=lambda kv: -kv[1]) if v > 0}


def run(args):
    import openvino as ov
    import engines
    from engines import openvino_engine as eng
    from engines.base import cpu_has_bf16
    depth, _, seg, size, pairs = sizes(args.quick)
    pairs = args.pairs or pairs
    tsm, x, eager = tsm_and_clip(args.quick)  # the TSM and clip the engines table times
    tsn = copy.deepcopy(tsm)  # the same weights, the shifts off
    tsn.backbone.set_shift(0.0, tsm.backbone.shift_direction, tsm.backbone.shift_place)
    shape, form = [seg, 3, size, size], engines.FORMULATION['openvino']
    tmp = tempfile.mkdtemp(prefix='tsm_shift_floor_')
    xml = {k: os.path.join(tmp, k, 'model') for k in ('tsn', 'split', 'no_moves')}
    for k in xml:
        os.makedirs(os.path.dirname(xml[k]))
    xml['tsn'] = eng.export(tsn, xml['tsn'], shape, form, 1)
    xml['split'] = eng.export(tsm, xml['split'], shape, form, 1)
    xml['no_moves'] = common.export_split_without_moves(tsm, xml['no_moves'], shape,
                                                        export=eng.export)
    core = ov.Core()
    result = {'machine': common.machine_info(), 'threads': args.threads, 'pairs': pairs,
              'openvino': ov.__version__, 'depth': depth, 'formulation': form}
    for precision in ['fp32'] + (['bf16'] if cpu_has_bf16() else []):
        config = {'INFERENCE_PRECISION_HINT': eng.HINTS[precision],
                  'INFERENCE_NUM_THREADS': args.threads, 'PERFORMANCE_HINT': 'LATENCY',
                  'NUM_STREAMS': 1}
        models = {k: core.read_model(v) for k, v in xml.items()}
        models['extension'], result['extension_ops'] = with_extension(xml['tsn'], 0.125)
        requests = {k: core.compile_model(m, 'CPU', config).create_infer_request()
                    for k, m in models.items()}
        for k, r in requests.items():  # warm-up
            r.infer({0: x})
            r.infer({0: x})
        if precision == 'fp32':
            out = {k: np.array(requests[k].infer({0: x})[0]) for k in ('split', 'extension')}
            result['split_probs_max_abs_diff'] = float(
                np.abs(softmax(out['split']) - softmax(eager)).max())
            result['ext_probs_max_abs_diff'] = float(
                np.abs(softmax(out['extension']) - softmax(eager)).max())
        fns = {k: (lambda r=r: r.infer({0: x})) for k, r in requests.items()}
        timed = common.bracketed(fns['tsn'], {k: fns[k] for k in fns if k != 'tsn'}, pairs)
        per = {'tsn_s': round(timed['base']['median_s'], 5),
               'overhead': {k: timed[k]['ratio'] - 1 for k in fns if k != 'tsn'},
               'quartiles': {k: [round(timed[k]['q1'] - 1, 4), round(timed[k]['q3'] - 1, 4)]
                             for k in fns if k != 'tsn'},
               'median_s': {k: round(timed[k]['median_s'], 5) for k in fns if k != 'tsn'}}
        profiled = {}
        for k in ('tsn', 'split', 'extension'):
            req = core.compile_model(models[k], 'CPU', {**config, 'PERF_COUNT': True}) \
                .create_infer_request()
            req.infer({0: x})
            profiled[k] = per_node_ms(req, x, max(3, pairs // 5))
        per['per_node_ms'] = profiled
        result[precision] = per
        for k in ('no_moves', 'extension'):
            result.setdefault(f'overhead_{k}', {})[precision] = per['overhead'][k]
        print(f"{precision}: TSN {per['tsn_s']:.4f} s; " + ', '.join(
            f"{k} {v:+.3f}" for k, v in per['overhead'].items()), flush=True)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true')
    p.add_argument('--pairs', type=int, default=0, help='rounds (default 30; --quick 3)')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: all available)')
    p.add_argument('--out', required=True)
    args = p.parse_args()
    args.threads = args.threads or len(os.sched_getaffinity(0))
    common.set_threads(args.threads)
    result = run(args)
    with open(args.out, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
