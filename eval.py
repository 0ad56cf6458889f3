"""Evaluate a model: prints TOP1_ACC / TOP5_ACC and writes eval_results.json."""

from jobs.entry import add_inference_flags, run_job
from utils.cli import base_parser


def parse_args(argv=None):
    p = base_parser('Evaluate TSM', save_dir='data/evaluate_results')
    p.add_argument('--weights', default=None,
                   help='weights file or URL; absent: the released model is downloaded')
    add_inference_flags(p, precision='fp32')  # reproduces published accuracy
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from jobs.eval_job import eval_job
    run_job('eval', args, 'TEST', {'batch_size': args.batch_size}, eval_job)


if __name__ == '__main__':
    main()
