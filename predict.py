"""Predict class probabilities for one video (--video_path) or a list (--filelist)."""
import logging

from utils.cli import base_parser, fail, load_config


def parse_args(argv=None):
    p = base_parser('Predict with TSM', save_dir='data/predict_results')
    p.add_argument('--weights', default=None,
                   help='weights file or URL; absent: the released model is downloaded')
    p.add_argument('--filelist', default=None, help='list of videos; absent: INFER.filelist')
    p.add_argument('--video_path', default='', help='predict this one video (ignores the list)')
    p.add_argument('--infer_topk', type=int, default=20, help='classes printed per video')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from utils.logger import setup_logging
    setup_logging()
    from utils.jobs import USER_ERRORS, predict_job
    try:
        cfg = load_config(args, 'INFER', {'batch_size': args.batch_size})
        predict_job(args, cfg)
    except USER_ERRORS as e:
        logging.getLogger('predict').debug('failed', exc_info=True)
        fail(e.args[0] if e.args else e)


if __name__ == '__main__':
    main()
