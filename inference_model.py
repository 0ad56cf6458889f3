"""Export TSM for an inference engine, checked against the eager model right after export
(same top-5, probabilities within 1e-5): input 'image' float32 [batch, seg_num,
3*seglen, H, W], output class probabilities.  The batch is fixed where it matters, as the
project's own runners use it (engines.BATCH: 1 for OpenVINO, which runs a dynamic-batch IR
slower, and for Paddle, whose frame moves become static slices; any for ONNX Runtime,
where no difference was measured); --batch N fixes N, --batch -1 leaves it dynamic.

--online writes the per-frame model of online TSM instead (models/online.py), checked
against the eager online model over 16 frames (logits within 1e-4 of their scale):
inputs 'frame' [batch, 3, S, S] and 'state_0' ... (one per shifted layer, zeros at the
first frame), outputs the frame's logits then the new states in the same order (named
'logits', 'new_state_0' ... in ONNX and OpenVINO; in that order in Paddle).  The mean over
a window of frames is the caller's (the mean of the logits is the head's).

  --backend paddle (default)  <save_dir>/TSM.json + TSM.pdiparams (paddle.jit.save; Paddle
                              2.6 writes TSM.pdmodel): Paddle Inference, paddle.jit.load
  --backend onnxruntime       <save_dir>/TSM.onnx (paddle2onnx): ONNX Runtime, any ONNX tool
  --backend openvino          <save_dir>/TSM.xml + TSM.bin (OpenVINO IR, float32 weights)

Each loads in its engine with no project code (README: Export for inference).  The shift is
exported in the engine's formulation (engines.FORMULATION; --formulation picks another).
The files are <save_dir>/TSM.*, or TSM_online.* with --online."""
from models.shift_conv import EXPORT_FORMULATIONS
from jobs.entry import add_engine_flags, run_job
from utils.cli import base_parser


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
    p.add_argument('--batch', type=int, default=None,
                   help='clips (--online: streams) per engine call, fixed in the exported '
                        'program; -1: any (dynamic); default: the engine\'s (engines.BATCH: '
                        '1 for openvino and paddle, any for onnxruntime)')
    p.add_argument('--online', action='store_true',
                   help='export the per-frame online model (inputs frame and states, outputs '
                        'logits and the new states)')
    args = p.parse_args(argv)
    if args.batch is not None and (args.batch == 0 or args.batch < -1):
        p.error(f'--batch must be positive, or -1 for a dynamic batch; got {args.batch}')
    if args.online and args.formulation is not None:
        p.error('--formulation applies to the clip model, not --online')
    return args


def main(argv=None):
    args = parse_args(argv)

    def export(args, cfg):
        from jobs.export_job import export_job
        path, files = export_job(args, cfg)
        print(f"saved inference model: {', '.join(files)}")
        return path

    run_job('export', args, 'INFER', {'batch_size': args.batch_size}, export)


if __name__ == '__main__':
    main()
