"""Convert published TSM weights into a checkpoint this project loads.

    python -m tools.convert_weights TSM.pdparams tsm_modelzoo.pdparams --from modelzoo
    python -m tools.convert_weights TSM_k400.pdparams tsm_paddlevideo.pdparams --from paddlevideo
    python -m tools.convert_weights TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth \\
        tsm_mit.pdparams --from mit                  # .pth: pip install -r requirements-convert.txt
    python -m tools.convert_weights tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb_*.pth \\
        tsm_mmaction2.pdparams --from mmaction2
    python -m tools.convert_weights TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth \\
        tsm_mbv2_kinetics.pdparams --from mit         # MODEL.backbone: mobilenetv2
    python -m tools.convert_weights mobilenetv2_jester_online.pth.tar tsm_mbv2_jester.pdparams \\
        --from mit_online                            # MIT online_demo's 27 Jester gestures

The output is a pickle of this project's state_dict keys -> float32 arrays plus
`__tsm_options__`, the model options the weights need (shift direction, ratio, placement,
which blocks shift, head) and what is known about them (source, depth, class count).
`models.load_weights` applies those options, so `eval.py --weights OUT` with
configs/tsm.yaml (configs/tsm_mobilenetv2*.yaml for MobileNetV2) computes what the source
model computes.  Backbone, depth and class count come from the weights; every array is checked against such a model before the file is written.
"""
import argparse
import logging
import os
import pickle
import sys


logger = logging.getLogger('convert_weights')


def parse_args(argv=None):
    from models.convert import SOURCES
    p = argparse.ArgumentParser(description='Convert published TSM weights for this project')
    p.add_argument('src', help='the published file (.pdparams, .pth, or a pickle of arrays)')
    p.add_argument('dst', help='where to write the converted .pdparams')
    p.add_argument('--from', dest='source', required=True, choices=SOURCES,
                   help='who published the weights')
    p.add_argument('--shift_div', type=int, default=None,
                   help='mit/mmaction2: 1/shift_div of the channels shift each way '
                        '(default: `shiftN` in the file name, else 8)')
    p.add_argument('--seg_num', type=int, default=8,
                   help='paddlevideo: segments it was trained with; it shifts 1/seg_num '
                        'of the channels (default 8)')
    return p.parse_args(argv)


def convert_file(src, dst, source, shift_div=None, seg_num=8):
    """Convert src (of `source`) to dst; -> the options written with it."""
    import numpy as np
    import paddle

    from models import convert
    from models.tsm import TSM
    from models.weight_files import OPTION_KEYS, OPTIONS_KEY, read_checkpoint
    from models.weights import check_fit, to_model_keys

    state = convert.read_source(src)
    found = convert.detect_source(convert.strip_prefix(state))
    if found is not None and found != source:
        raise convert.ConvertError(f"{src} has {found} names, not {source}: use --from {found}")
    arrays, info = convert.to_arrays(state, source)
    if shift_div is None:
        shift_div = convert.shift_div_from_name(src)
    options = convert.source_options(source, info, shift_div=shift_div, seg_num=seg_num)
    backbone = info.get('backbone', 'resnet')
    with paddle.LazyGuard():  # names and shapes only: no parameter is initialised
        model = TSM(num_classes=info['num_classes'], num_layers=info.get('num_layers', 50),
                    seg_num=seg_num, backbone=backbone,
                    **{k: options[k] for k in OPTION_KEYS if k in options})
    ours = to_model_keys(model, arrays, src)
    check_fit(model, ours, src)
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in ours.items()}
    out[OPTIONS_KEY] = options
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = f"{dst}.tmp{os.getpid()}"
    with open(tmp, 'wb') as f:
        pickle.dump(out, f, protocol=4)
    back, _, back_options = read_checkpoint(tmp)  # what load_weights will read
    if set(back) != set(ours) or back_options != options:
        os.remove(tmp)
        raise convert.ConvertError(f"{dst}: the written file does not read back the same")
    os.replace(tmp, dst)
    logger.info("wrote %s: %s %s TSM, %d classes, %d arrays; options %s", dst, source,
                f"ResNet-{info['num_layers']}" if backbone == 'resnet' else 'MobileNetV2',
                info['num_classes'], len(ours),
                {k: options[k] for k in OPTION_KEYS if k in options})
    return options


def main(argv=None):
    from utils.logger import setup_logging
    setup_logging()
    args = parse_args(argv)
    from models.weight_files import WeightsError
    try:
        convert_file(args.src, args.dst, args.source, args.shift_div, args.seg_num)
    except (WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    main()
