"""Train a video classifier: python train.py --model_name=TSM --config=./configs/tsm.yaml"""

from utils.cli import base_parser, str2bool
from jobs.entry import run_job


def parse_args(argv=None):
    p = base_parser('Train TSM', save_dir='data/checkpoints')
    p.add_argument('--learning_rate', type=float, default=None, help='overrides the config')
    p.add_argument('--pretrain', default=None,
                   help="pretrained weights (file, folder or URL); absent: ImageNet ResNet-50 "
                        "is downloaded; 'none': from scratch")
    p.add_argument('--resume', default=None,
                   help="checkpoint prefix to resume from; 'latest': the newest in --save_dir")
    p.add_argument('--save_interval_iters', type=int, default=0,
                   help='also checkpoint every N iterations within an epoch (0: epoch ends only)')
    p.add_argument('--epoch', type=int, default=None, help='epochs; overrides the config')
    p.add_argument('--valid_interval', type=int, default=1, help='epochs between validations; 0: none')
    p.add_argument('--fix_random_seed', type=str2bool, default=False)
    p.add_argument('--use_visualdl', type=str2bool, default=False, help='write VisualDL logs')
    p.add_argument('--is_profiler', type=str2bool, default=False, help='accepted, unused')
    p.add_argument('--profiler_path', default='./', help='accepted, unused')
    p.add_argument('--no_memory_optimize', action='store_true', help='accepted, unused')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from jobs.train_job import train_job
    run_job('train', args, 'TRAIN', {'batch_size': args.batch_size,
                                     'learning_rate': args.learning_rate, 'epoch': args.epoch},
            train_job)


if __name__ == '__main__':
    main()
