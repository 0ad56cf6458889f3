"""Export TSM for an inference engine, checked against the eager model right after export
(same top-5, probabilities within 1e-5): input 'image' float32 [batch, seg_num,
3*seglen, H, W] (any batch), output class probabilities.

  --backend paddle (default)  <save_dir>/TSM.json + TSM.pdiparams (paddle.jit.save; Paddle
                              2.6 writes TSM.pdmodel): Paddle Inference, paddle.jit.load
  --backend onnxruntime       <save_dir>/TSM.onnx (paddle2onnx): ONNX Runtime, any ONNX tool
  --backend openvino          <save_dir>/TSM.xml + TSM.bin (OpenVINO IR, float32 weights)

Each loads in its engine with no project code (README: Export for inference).  The shift is
exported in the engine's formulation (engines.FORMULATION; --formulation picks another)."""
from models.shift_conv import EXPORT_FORMULATIONS
from utils.cli import add_engine_flags, base_parser, run_job


def parse_args(argv=None):
    p = base_parser('Export TSM for inference', save_dir='inference_model')
    p.add_argument('--weights', default=None,
                   help='weights file or URL; absent: the released model is downloaded')
    add_engine_flags(p, 'paddle', 'fp32')
    p.add_argument('--formulation', choices=EXPORT_FORMULATIONS, default=None,
                   help='how the exported program computes the shift (models/shift_conv.py); '
                        'default: the engine\'s (engines.FORMULATION, split today): split '
                        'and conv equal eager within float rounding; slice is bit for bit the '
                        'eager shift; fused is Paddle\'s op')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    def export(args, cfg):
        from utils.jobs import export_job
        path, files = export_job(args, cfg)
        print(f"saved inference model: {', '.join(files)}")
        return path

    run_job('export', args, 'INFER', {'batch_size': args.batch_size}, export)


if __name__ == '__main__':
    main()
