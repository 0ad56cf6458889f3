"""Evaluate a model: prints TOP1_ACC / TOP5_ACC and writes eval_results.json."""
import logging

from utils.cli import add_inference_flags, base_parser, fail, load_config


def parse_args(argv=None):
    p = base_parser('Evaluate TSM', save_dir='data/evaluate_results')
    p.add_argument('--weights', default=None,
                   help='weights file or URL; absent: the released model is downloaded')
    add_inference_flags(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from utils.logger import setup_logging
    setup_logging()
    from utils.jobs import USER_ERRORS, eval_job
    try:
        cfg = load_config(args, 'TEST', {'batch_size': args.batch_size})
        eval_job(args, cfg)
    except USER_ERRORS as e:
        logging.getLogger('eval').debug('failed', exc_info=True)
        fail(e.args[0] if e.args else e)


if __name__ == '__main__':
    main()
