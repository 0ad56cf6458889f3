"""Quantize TSM to int8 (post-training, NNCF on OpenVINO), calibrated on the videos of a
list, for `--precision int8` and for deployment as plain OpenVINO IR.

    python -m tools.quantize --config configs/tsm.yaml --weights TSM.pdparams \\
        --filelist calib.list [--subset 300] [--save_dir inference_model_int8]

The videos are read as predict.py reads them (the INFER section's sampling and
transforms, INFER.num_reader_threads worker processes); a list may have labels or not.
Writes the int8 model into the inference cache ($TSM_PADDLE_CACHE, default
~/.cache/tsm_paddle), where `predict.py`, `eval.py` and `serve.py --precision int8
[--backend openvino]` with the same config and weights find it, and to
<save_dir>/<MODEL_NAME>.xml + .bin: OpenVINO IR, input 'image' float32
[1, seg_num, 3*seglen, H, W] (one clip per call), output class probabilities.
Logs int8's top-1 agreement with float32 on the first calibration clips.
engines/int8.py says how, and why Paddle's own quantization is not offered.
"""

from utils.cli import base_parser
from jobs.entry import run_job


def parse_args(argv=None):
    p = base_parser('Quantize TSM to int8 (post-training, calibrated on a list of videos)',
                    save_dir='inference_model_int8')
    p.add_argument('--weights', default=None,
                   help='weights file or URL; absent: the released model is downloaded')
    p.add_argument('--filelist', required=True,
                   help='calibration videos, one per line (labels optional); a few hundred '
                        'from the data the model will see')
    p.add_argument('--subset', type=int, default=300,
                   help='calibration clips used at most (NNCF\'s default: 300)')
    p.add_argument('--backend', choices=('openvino', 'paddle'), default='openvino',
                   help='the engine that will run the int8 model: openvino (NNCF); paddle is '
                        'not offered (engines/int8.py says why)')
    args = p.parse_args(argv)
    if args.subset < 1:
        p.error('--subset must be at least 1')
    return args


def main(argv=None):
    args = parse_args(argv)

    def quantize(args, cfg):
        from jobs.quantize_job import quantize_job
        result = quantize_job(args, cfg)
        print(f"saved int8 model: {', '.join(result['files'])}")
        print(f"cached for --precision int8: {result['cache']}")
        return result

    run_job('quantize', args, 'INFER', {'batch_size': args.batch_size}, quantize)


if __name__ == '__main__':
    main()
