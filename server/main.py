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


def listen(host, port, send_timeout):
    """A bound socket (port 0: any free port), for uvicorn; its connections reset when a
    client reads nothing for `send_timeout` seconds (transport.bound_sends)."""
    from .transport import bound_sends
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bound_sends(sock, send_timeout)
        sock.bind((host, port))
    except OSError as e:
        raise EnvError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def host_names(host, allowed):
    """The Host names a browser may use besides IP addresses and localhost (guard.Policy):
    --host when it is a name, this machine's name when listening beyond loopback, and
    --allow_host."""
    names = list(allowed)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        names.append(host)
    if not is_loopback(host):
        names.append(socket.gethostname())
    return tuple(names)


def decode_workers(args, cfg):
    """--decode_workers, else INFER.num_reader_threads, within the available cores."""
    wanted = args.decode_workers or cfg.INFER.num_reader_threads or 1
    return max(1, min(wanted, available_cpus()))


def settings_of(args):
    """serve.py's flags -> (app.Settings, transport.Limits)."""
    from .app import Settings
    from .online import MAX_FRAME_BYTES
    from .transport import Limits
    settings = Settings(
        token=args.token, max_upload_mb=args.max_upload_mb, max_queue=args.max_queue,
        batch_wait_ms=args.batch_wait_ms, max_online=args.max_online,
        online_window=args.online_window, allow_hosts=host_names(args.host, args.allow_host),
        allow_origins=tuple(args.allow_origin), body_timeout=args.body_timeout,
        min_body_rate=args.min_body_kbps * 1024, ws_idle_timeout=args.ws_idle_timeout,
        max_frame_pixels=args.max_frame_pixels, docs=args.docs)
    limits = Limits(max_connections=args.max_connections,
                    keep_alive_timeout=args.keep_alive_timeout,
                    header_timeout=args.header_timeout, send_timeout=args.send_timeout,
                    ws_max_size=MAX_FRAME_BYTES)
    return settings, limits


def serve_job(args, cfg):
    import uvicorn
    from .app import create_app
    from .decode import DecodePool
    from .limits import decode_limits
    from .service import Service
    from .transport import uvicorn_config
    if not args.token and not is_loopback(args.host):
        logger.warning("serving on %s without a token (--insecure): anyone who reaches the "
                       "port can use the model", args.host)
    settings, limits = settings_of(args)
    sock = listen(args.host, args.port, limits.send_timeout)  # a port in use fails first
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
    app = create_app(service, pool, settings)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[%s]' % host if ':' in host else host}:{port}"
    logger.info("serving on %s (page: %s/%s)%s", url, url,
                f", API docs: {url}/docs" if settings.docs else '',
                ', bearer token required' if settings.token else '')
    config = uvicorn_config(app, limits)
    # SIGTERM: requests still running after SHUTDOWN_GRACE_S are cancelled, then the
    # lifespan's pool.close() kills a worker stuck in a decode
    config.timeout_graceful_shutdown = SHUTDOWN_GRACE_S
    uvicorn.Server(config).run(sockets=[sock])
