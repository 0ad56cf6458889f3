"""Serve TSM over HTTP: a JSON API (/v1/predict, /v1/labels, /v1/model, /metrics,
/healthz), a page at / to upload a video or classify the camera online, OpenAPI docs
at /docs with --docs.  The model is loaded as predict.py loads it (same flags, engines, config)."""
import os

from jobs.entry import add_inference_flags, run_job
from server.limits import LIMIT_FLAGS
from utils.cli import base_parser


def add_limit_flags(group, decode):
    """The flags of server.limits.LIMIT_FLAGS: the decode limits, or the connection ones."""
    for f in LIMIT_FLAGS:
        if bool(f.field) == decode:
            group.add_argument('--' + f.name, type=f.kind, default=f.default, help=f.help)


def add_decode_limits(p):
    """Checked on an upload's headers before it is decoded (docs/serving.md)."""
    g = p.add_argument_group('decode limits', 'an upload over one gets a 422 before it is '
                             'decoded; INFER.video_timeout bounds the decode time of a whole '
                             'request')
    add_limit_flags(g, decode=True)


def add_security_flags(p):
    """Who may talk to the server and how long a client may take."""
    g = p.add_argument_group('limits and origins (docs/serving.md, Security)')
    g.add_argument('--allow_host', action='append', default=[], metavar='NAME',
                   help='a Host name browsers may use besides IP addresses, localhost, --host '
                        'and (listening beyond loopback) this machine\'s name; repeatable; '
                        "'*': any (turns off the DNS-rebinding check)")
    g.add_argument('--allow_origin', action='append', default=[], metavar='URL',
                   help='a web origin (https://example.org) whose pages may POST and open the '
                        "WebSocket, besides the server's own page; repeatable; '*': any")
    add_limit_flags(g, decode=False)
    g.add_argument('--docs', action='store_true',
                   help='serve the OpenAPI page at /docs (its script comes from a CDN); '
                        '/openapi.json is always served')


def parse_args(argv=None):
    p = base_parser('Serve TSM over HTTP', save_dir='data/serve')
    p.add_argument('--weights', default=None,
                   help='weights file or URL; absent: the released model is downloaded')
    add_inference_flags(p)
    p.add_argument('--host', default='127.0.0.1',
                   help='address to listen on (default loopback only); any other needs --token')
    p.add_argument('--port', type=int, default=8000, help='port (0: any free port)')
    p.add_argument('--token', default=os.environ.get('TSM_SERVE_TOKEN') or None,
                   help='require `Authorization: Bearer TOKEN` on /v1/* and /metrics '
                        '(default: $TSM_SERVE_TOKEN, which keeps it out of `ps`)')
    p.add_argument('--insecure', action='store_true',
                   help='allow a non-loopback --host without --token (anyone who can reach '
                        'the port can use the model)')
    p.add_argument('--max_upload_mb', type=float, default=200, help='largest video accepted')
    p.add_argument('--max_queue', type=int, default=32,
                   help='predict requests served at once; more get 503 with Retry-After')
    p.add_argument('--decode_workers', type=int, default=0,
                   help='decode processes (0: INFER.num_reader_threads, within the cores)')
    p.add_argument('--batch_wait_ms', type=float, default=5,
                   help='how long a clip waits for others to share its model call '
                        '(up to INFER.batch_size clips)')
    add_decode_limits(p)
    p.add_argument('--max_online', type=int, default=2, help='online (camera) sessions at once')
    p.add_argument('--online_window', type=int, default=None,
                   help='online: frames averaged by the head (default MODEL.seg_num; 0: all)')
    add_security_flags(p)
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error('--port must be in [0, 65535]')
    for name in ('max_upload_mb', 'max_queue', 'max_online',
                 *(f.name for f in LIMIT_FLAGS if not f.zero_ok)):
        if not getattr(args, name) > 0:  # NaN too
            p.error(f'--{name} must be positive')
    if args.batch_wait_ms < 0 or args.decode_workers < 0 or args.decode_memory_mb < 0:
        p.error('--batch_wait_ms, --decode_workers and --decode_memory_mb must be >= 0')
    if args.max_aspect < 1:
        p.error('--max_aspect must be at least 1')
    if args.online_window is not None and args.online_window < 0:
        p.error('--online_window must be >= 0')
    if args.token is not None and not (args.token.isascii() and args.token.isprintable()
                                       and args.token.strip() == args.token):
        p.error('--token (or $TSM_SERVE_TOKEN) must be printable ASCII without surrounding '
                'spaces: browsers send other characters in headers in different encodings')
    from server.guard import origin_of
    for origin in args.allow_origin:
        try:
            origin != '*' and origin_of(origin)
        except ValueError:
            p.error(f'--allow_origin {origin!r}: give scheme://host[:port], e.g. https://example.org')
    from server.main import is_loopback
    if not args.token and not args.insecure and not is_loopback(args.host):
        p.error(f'--host {args.host} is reachable from other machines: give --token '
                '(or $TSM_SERVE_TOKEN), or --insecure to serve without one')
    return args


def main(argv=None):
    args = parse_args(argv)
    from server.main import serve_job
    run_job('serve', args, 'INFER', {'batch_size': args.batch_size}, serve_job)


if __name__ == '__main__':
    main()
