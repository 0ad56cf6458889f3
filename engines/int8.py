"""int8 by post-training quantization: a float32 export and some calibration clips -> an
int8 model, and how its predictions compare with float32's.

    qmodel = quantize_openvino(xml, clips, subset)   # openvino.Model with FakeQuantize ops
    save_ir(qmodel, prefix, probabilities=True)      # <prefix>.xml + .bin, plain OpenVINO IR
    compare(fp32_probs, int8_probs)                  # agreement figures

OpenVINO is the engine that runs it.  NNCF's nncf.quantize runs the float32 IR on the
clips, records the range of the input of every convolution and of the classifier, and
puts FakeQuantize ops there and on their weights (8 bits, NNCF's default `performance`
preset: symmetric), then corrects the biases for the weights' rounding (fast bias
correction); quantize_moved_folds then lets the convolutions that read moved folds run in
int8 too (faster: docs/int8.md).  OpenVINO's CPU plugin runs every convolution with int8
(u8 x i8) kernels and the rest (the frame moves, residual sums, the head) in float32.

Paddle's own post-training quantization is not offered (QUANTIZERS): under Paddle 3.3.1,
paddle.quantization.PTQ wraps layers, so it does not see the convolutions of the split
export (functional calls over channel parts) and needs the slice export; and the program
it saves (quantize_linear / dequantize_linear ops) does not load in Paddle Inference's CPU
predictor, with or without enable_mkldnn_int8 ('Tensor holds no memory' in its constant
folding of a cast).
"""
import logging

import numpy as np

logger = logging.getLogger(__name__)

QUANTIZERS = ('openvino',)
PADDLE_REASON = ("Paddle 3.3's own post-training quantization writes programs its CPU "
                 "predictor cannot load (engines/int8.py)")
# fp32's top-2 probability gap above which int8 "should" keep the top-1 (compare)
CLEAR_MARGIN = 0.1


def quantize_openvino(xml, clips, subset):
    """The float32 OpenVINO IR `xml` quantized to int8 by NNCF, calibrated on up to
    `subset` items of `clips` (an iterable of float32 model inputs, iterated again on
    each pass NNCF makes); -> openvino.Model."""
    import nncf
    from engines.openvino_engine import CORE  # one Core per process (docs/single_process_crash.md)
    model = CORE.read_model(xml)
    qmodel = nncf.quantize(model, nncf.Dataset(clips), subset_size=subset)
    quantize_moved_folds(qmodel)
    return qmodel


def _quantized_sources(output):
    """The FakeQuantize ops whose outputs, with constant zeros, make up `output` through
    Concats only (a frame move of the split export: a zero frame beside the frames of a
    quantized tensor); None when anything else contributes."""
    node = output.get_node()
    kind = node.get_type_name()
    if kind == 'FakeQuantize':
        return [node]
    if kind == 'Constant':
        return [] if not np.any(node.get_data()) else None
    if kind != 'Concat':
        return None
    found = []
    for inp in node.inputs():
        sources = _quantized_sources(inp.get_source_output())
        if sources is None:
            return None
        found += sources
    return found


def quantize_moved_folds(model):
    """Let OpenVINO run in int8 the convolutions that read moved folds: NNCF quantizes the
    frames a move takes but not the constant zero frame it adds, so their concatenation,
    and the convolution reading it, stay float32 (16 of R50's split export's convolutions,
    an eighth of its multiply-adds).  Those values are already on the 8-bit grid of the
    FakeQuantize they came through (zero is on every grid NNCF makes), so the same
    FakeQuantize put on the convolution's input changes none of them; OpenVINO then runs
    the convolution in int8.  Only where every source has the same parameters.  In place;
    -> the number of FakeQuantize ops added."""
    from openvino import opset13
    added = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != 'Convolution':
            continue
        data = op.input(0).get_source_output()
        sources = _quantized_sources(data)
        if not sources or sources == [data.get_node()]:
            continue
        ranges = [[fq.input_value(i).get_node().get_data() for i in range(1, 5)]
                  for fq in sources]
        if any(fq.get_levels() != sources[0].get_levels() for fq in sources) or \
                any(not all(np.array_equal(a, b) for a, b in zip(ranges[0], r)) for r in ranges):
            continue
        fq = sources[0]
        requant = opset13.fake_quantize(data, *(fq.input_value(i) for i in range(1, 5)),
                                        fq.get_levels())
        op.input(0).replace_source_output(requant.output(0))
        added += 1
    model.validate_nodes_and_infer_types()
    return added


def quantized_ops(model):
    """The FakeQuantize ops of an openvino.Model (NNCF's int8 marks)."""
    return [op for op in model.get_ops() if op.get_type_name() == 'FakeQuantize']


def save_ir(model, prefix, probabilities=False):
    """`model` (logits out) as plain OpenVINO IR at prefix.xml + .bin, float32 weights where
    not quantized; probabilities: a softmax appended, as inference_model.py's exports."""
    import openvino as ov
    if probabilities:  # a copy whose result reads softmax(logits)
        from openvino import opset13
        model = model.clone()
        result = model.get_results()[0]
        probs = opset13.softmax(result.input_value(0), -1)
        result.input(0).replace_source_output(probs.output(0))
        model.validate_nodes_and_infer_types()
    ov.save_model(model, prefix + '.xml', compress_to_fp16=False)
    return prefix + '.xml'


def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def compare(fp32, int8, margin=CLEAR_MARGIN):
    """Probabilities [N, K] of the same clips in float32 and int8 -> {'clips',
    'top1_agreement', 'mean_abs_prob_diff' (|p_int8 - p_fp32| over every clip and class),
    'mean_max_abs_prob_diff' (per clip the largest over classes, averaged), 'max_abs_prob_diff',
    'clear_clips' (fp32's top-2 gap > margin), 'clear_top1_agreement' (None when no clip
    is clear)}."""
    fp32, int8 = np.asarray(fp32, np.float64), np.asarray(int8, np.float64)
    same = fp32.argmax(1) == int8.argmax(1)
    top2 = -np.sort(-fp32, 1)[:, :2]
    clear = top2[:, 0] - top2[:, 1] > margin
    diff = np.abs(int8 - fp32)
    return {'clips': len(fp32), 'top1_agreement': float(same.mean()),
            'mean_abs_prob_diff': float(diff.mean()),
            'mean_max_abs_prob_diff': float(diff.max(1).mean()),
            'max_abs_prob_diff': float(diff.max()),
            'clear_margin': margin, 'clear_clips': int(clear.sum()),
            'clear_top1_agreement': float(same[clear].mean()) if clear.any() else None}
