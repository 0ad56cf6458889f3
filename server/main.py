"""serve.py's job: load the model and the decode workers, warm both, then run uvicorn."""
import ipaddress
import logging
import socket

from utils.env import EnvError, available_cpus

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5  # SIGTERM to exit: this, the workers' KILL_AFTER_S, the clean-up


def is_loopback(host):
    """127.0.0.0/8, ::1 or a name that resolves only to them (localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def listen(host, port):
    """A bound socket (port 0: any free port), for uvicorn."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        raise EnvError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def decode_workers(args, cfg):
    """--decode_workers, else INFER.num_reader_threads, within the available cores."""
    wanted = args.decode_workers or cfg.INFER.num_reader_threads or 1
    return max(1, min(wanted, available_cpus()))


def decode_limits(args):
    """serve.py's --max_fps ... --decode_memory_mb -> DecodeLimits."""
    from .limits import DecodeLimits
    return DecodeLimits(max_fps=args.max_fps, max_duration_s=args.max_duration,
                        max_frames=args.max_frames, max_pixels=args.max_pixels,
                        max_aspect=args.max_aspect, max_windows=args.max_windows,
                        memory_mb=args.decode_memory_mb)


def serve_job(args, cfg):
    import uvicorn
    from .app import Settings, create_app
    from .decode import DecodePool
    from .service import Service
    if not args.token and not is_loopback(args.host):
        logger.warning("serving on %s without a token (--insecure): anyone who reaches the "
                       "port can use the model", args.host)
    sock = listen(args.host, args.port)  # a port in use fails before the model loads
    pool = DecodePool(cfg, decode_workers(args, cfg), decode_limits(args))
    try:
        workers_ready = pool.warm()  # the workers start while the model loads
        service = Service(args, cfg)
        service.warm()
        workers_ready()
    except BaseException:  # bad weights, labels...: no worker left behind
        pool.close()
        sock.close()
        raise
    settings = Settings(args.token, args.max_upload_mb, args.max_queue, args.batch_wait_ms,
                        args.max_online, args.online_window)
    app = create_app(service, pool, settings)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[%s]' % host if ':' in host else host}:{port}"
    logger.info("serving on %s (page: %s/, API docs: %s/docs)%s", url, url, url,
                ', bearer token required' if settings.token else '')
    config = uvicorn.Config(app, log_config=None, ws='websockets-sansio', ws_max_size=4 << 20,
                            server_header=False, lifespan='on')
    # SIGTERM: requests still running after SHUTDOWN_GRACE_S are cancelled, then the
    # lifespan's pool.close() kills a worker stuck in a decode
    config.timeout_graceful_shutdown = SHUTDOWN_GRACE_S
    uvicorn.Server(config).run(sockets=[sock])
