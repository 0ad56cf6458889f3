"""Predict class probabilities for one video or every video under a folder (--video_path),
or a list (--filelist); along long videos in windows (--window_seconds); or online,
frame by frame, over a video or a camera (--online)."""

from jobs.entry import add_inference_flags, run_job
from utils.cli import base_parser


def parse_args(argv=None):
    p = base_parser('Predict with TSM', save_dir='data/predict_results')
    p.add_argument('--weights', default=None,
                   help='weights file or URL; absent: the released model is downloaded')
    add_inference_flags(p)
    p.add_argument('--filelist', default=None, help='list of videos; absent: INFER.filelist')
    p.add_argument('--video_path', default='',
                   help='predict this one video, or every video under this folder (recursively: '
                        'mp4 avi mkv webm mov flv m4v); ignores the list')
    p.add_argument('--infer_topk', type=int, default=20, help='classes printed per video')
    p.add_argument('--num_reader_threads', type=int, default=None,
                   help='worker processes that decode while the engine runs (INFER.'
                        'num_reader_threads; default: one per core for several videos, none '
                        'for one video; see inference/core_plan.py)')
    p.add_argument('--window_seconds', type=float, default=None,
                   help='predict along each video: one prediction per window of this many '
                        'seconds (each window sampled as a clip of its own)')
    p.add_argument('--stride_seconds', type=float, default=None,
                   help='seconds between window starts (default: --window_seconds)')
    p.add_argument('--online', action='store_true',
                   help='online TSM: one frame at a time through the 2D network, the shift '
                        'looking backwards only; prints the top class when it changes')
    p.add_argument('--online_window', type=int, default=None,
                   help='--online: frames averaged by the head (default MODEL.seg_num; '
                        '0: every frame seen so far)')
    p.add_argument('--camera', type=int, default=None,
                   help='--online: read this camera (OpenCV device index) instead of a file')
    args = p.parse_args(argv)
    if args.window_seconds is not None and args.window_seconds <= 0:
        p.error('--window_seconds must be positive')
    if args.stride_seconds is not None and (args.stride_seconds <= 0
                                            or args.window_seconds is None):
        p.error('--stride_seconds must be positive and needs --window_seconds')
    if args.camera is not None and not args.online:
        p.error('--camera needs --online')
    if args.online and (args.window_seconds is not None or args.filelist):
        p.error('--online reads one stream: not with --window_seconds or --filelist')
    if args.online_window is not None and args.online_window < 0:
        p.error('--online_window must be >= 0')
    if args.num_reader_threads is not None and args.num_reader_threads < 0:
        p.error('--num_reader_threads must be >= 0')
    return args


def main(argv=None):
    args = parse_args(argv)
    from jobs.predict_job import predict_job
    run_job('predict', args, 'INFER', {'batch_size': args.batch_size,
                                       'num_reader_threads': args.num_reader_threads},
            predict_job)


if __name__ == '__main__':
    main()
