"""Export a static inference model (paddle.jit.save): input [None, seg_num, 3*seglen, H, W]
float32, output class probabilities.  Load it with paddle.jit.load or Paddle Inference
(utils/inference.py create_predictor).  By default the activations travel as two channel
parts, the shifted folds and the rest (--formulation split), the fast form for oneDNN."""
import os

from models.shift_conv import EXPORT_FORMULATIONS
from utils.cli import base_parser, run_job


def parse_args(argv=None):
    p = base_parser('Export TSM for inference', save_dir='inference_model')
    p.add_argument('--weights', default=None,
                   help='weights file or URL; absent: the released model is downloaded')
    p.add_argument('--formulation', choices=EXPORT_FORMULATIONS, default='split',
                   help='how the exported program computes the shift (models/shift_conv.py): '
                        'split (fastest on oneDNN) and conv equal eager within float '
                        'rounding; slice is bit for bit the eager shift; fused is Paddle\'s op')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    def export(args, cfg):
        from utils.jobs import export_job
        path = export_job(args, cfg)
        print(f"saved inference model to {path}.* ({os.path.basename(path)}.pdiparams + program)")
        return path

    run_job('export', args, 'INFER', {'batch_size': args.batch_size}, export)


if __name__ == '__main__':
    main()
