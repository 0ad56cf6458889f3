"""Downloads of the released weights into ~/.paddle/weights, as the original did.

A download goes to `<file>.part` and is renamed only when complete (every byte the server
announced arrived, and the checksum matches where one is known), so a partial file is never
taken for the real one; an interrupted download resumes from its `.part` where the server
supports ranges and the remote file has not changed since the `.part` began (the ETag or
Last-Modified it had then is kept in `<file>.part.json` and sent as If-Range).  Remote URLs
must be https, redirects included; plain http is accepted for 127.0.0.1/localhost only
(tests).  A URL given by the user is cached by URL (fetch_url); the released files keep the
original's paths (released_weights).
"""
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request

logger = logging.getLogger(__name__)

# Base URL of the model zoo's files; TSM_WEIGHTS_BASE_URL overrides it (mirrors, tests).
BASE_URL = 'https://paddlemodels.bj.bcebos.com/video_classification/'
RELEASED = {
    # name: (file, sha256 or None when no source publishes one).  Neither the model zoo
    # (PaddleCV/video README and models/model.py get_weights, which downloads unchecked) nor
    # PaddleVideo's docs publish a checksum for these two files; a size or hash measured here
    # from a download would be no independent check, so none is recorded.
    'TSM': ('TSM.pdparams', None),
    'ResNet50_pretrained': ('ResNet50_pretrained.tar.gz', None),
}
# OpenMMLab's checkpoints (mmaction2's TSM among them) are named
# <name>_<YYYYMMDD>-<first 8 hex digits of the file's sha256>.pth: mmaction2's
# tools/deployment/publish_model.py runs sha256sum on the saved file and appends sha[:8]
# (the `name-<sha256 prefix>.ext` convention torch.hub's check_hash reads).
_PUBLISHED_NAME = re.compile(r'_\d{8}-([0-9a-f]{8})\.pth$')


def name_sha256(name):
    """The sha256 prefix a published file's name carries (OpenMMLab's convention), or None."""
    m = _PUBLISHED_NAME.search(name)
    return m.group(1) if m else None


class DownloadError(RuntimeError):
    """A download that failed; the message says which file to put where by hand."""


def weights_dir():
    return os.path.join(os.path.expanduser('~'), '.paddle', 'weights')


def base_url():
    return os.environ.get('TSM_WEIGHTS_BASE_URL', BASE_URL)


def check_url(url):
    parts = urllib.parse.urlparse(url)
    local = parts.hostname in ('127.0.0.1', 'localhost', '::1')
    if parts.scheme != 'https' and not (parts.scheme == 'http' and local):
        raise DownloadError(f"refusing to download over {parts.scheme or 'no scheme'}: {url} "
                            f"(https only)")


def sha256sum(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL that check_url accepts (no https -> http)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_CheckedRedirects)


def _range_start(resp):
    m = re.match(r'bytes (\d+)-', resp.headers.get('Content-Range', ''))
    return int(m.group(1)) if m else None


def _validator(resp):
    """What identifies this version of the remote file: a strong ETag, else Last-Modified
    (If-Range admits no weak ETag, RFC 9110 13.1.5); None when the server sends neither."""
    etag = resp.headers.get('ETag')
    if etag and not etag.startswith('W/'):
        return etag
    return resp.headers.get('Last-Modified')


def _sidecar(part):
    return part + '.json'


def _recorded_validator(part):
    try:
        with open(_sidecar(part), encoding='utf-8') as f:
            return json.load(f).get('validator')
    except (OSError, ValueError, AttributeError):  # none, or cut short while written
        return None


def _restart(part):
    for path in (part, _sidecar(part)):
        if os.path.exists(path):
            os.remove(path)


def _fetch(url, part, timeout):
    """Append to or (re)write `part` from url; ConnectionError when bytes are missing.
    A `.part` is continued only with `If-Range: <validator recorded when it began>`, so
    bytes of a remote file that has changed since are never spliced onto the old ones."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    known = _recorded_validator(part) if have else None
    if have and not known:
        logger.info("%s: no ETag or Last-Modified was recorded when it began, so the remote "
                    "file may have changed since: downloading %s from the start", part, url)
        _restart(part)
        have = 0
    headers = {'Range': f'bytes={have}-', 'If-Range': known} if have else {}
    try:
        resp = _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is no prefix the server can continue
            _restart(part)
            return _fetch(url, part, timeout)
        raise
    with resp:
        resumed = (bool(have) and resp.status == 206 and _range_start(resp) == have
                   and _validator(resp) in (None, known))  # a server that ignored If-Range
        if have and not resumed:
            logger.info("the server does not continue %s (the remote file changed, or no "
                        "ranges): downloading it from the start", url)
            if resp.status == 206:  # a range, but not of this version or not from `have`
                resp.close()
                _restart(part)
                return _fetch(url, part, timeout)
        if not resumed:  # a fresh start: remember which version of the file this is
            _restart(part)
            validator = _validator(resp)
            if validator:
                with open(_sidecar(part), 'w', encoding='utf-8') as f:
                    json.dump({'url': url, 'validator': validator}, f)
        length = resp.headers.get('Content-Length')
        expected = int(length) + (have if resumed else 0) if length else None
        with open(part, 'ab' if resumed else 'wb') as f:
            shutil.copyfileobj(resp, f, 1 << 20)
    size = os.path.getsize(part)
    if expected is not None and size != expected:
        raise ConnectionError(f"the connection ended after {size} of {expected} bytes")
    return part


def download(url, dest, sha256=None, timeout=60):
    """Fetch url to dest atomically; resumes a `.part` left by an interrupted try when the
    server supports ranges and the remote file is unchanged.  sha256: the file's sha256,
    or its first digits (at least 8) as a published name gives them.  Returns dest."""
    check_url(url)
    if sha256 is not None and not re.fullmatch(r'[0-9a-f]{8,64}', sha256):
        raise ValueError(f"sha256 {sha256!r} is not 8 to 64 lowercase hex digits")
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + '.part'
    logger.info("downloading %s -> %s", url, dest)
    try:
        _fetch(url, part, timeout)
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, cut
        reason = getattr(e, 'reason', None) or str(e) or type(e).__name__
        again = (f"run again to resume from {part}, or " if _recorded_validator(part) else
                 "run again, or " if os.path.exists(part) else '')
        raise DownloadError(f"cannot download {url} ({reason}); {again}download it by hand "
                            f"and put it at {dest}") from None
    if sha256:
        got = sha256sum(part)
        if not got.startswith(sha256):
            _restart(part)
            raise DownloadError(f"checksum mismatch for {url}: its sha256 is {got[:len(sha256)]}"
                                f"..., expected {sha256}...; the downloaded file was removed, "
                                f"try again or put the file at {dest} by hand")
    os.replace(part, dest)
    _restart(part)  # the sidecar
    return dest


def safe_extract(archive, target):
    """Unpack a tar archive, refusing members that would land outside target and
    anything but plain files and folders (links, devices)."""
    target = os.path.abspath(target)
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                dest = os.path.abspath(os.path.join(target, member.name))
                if not (dest == target or dest.startswith(target + os.sep)):
                    raise DownloadError(f"{archive}: member '{member.name}' escapes the "
                                        f"target folder")
                if not (member.isfile() or member.isdir()):
                    raise DownloadError(f"{archive}: member '{member.name}' is not a plain file")
            # the 'data' filter (Python >= 3.11.4) checks the same again on extraction
            kwargs = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
            tar.extractall(target, **kwargs)
    except (tarfile.TarError, EOFError) as e:
        raise DownloadError(f"{archive} is not a readable tar archive ({e}); remove it and "
                            f"try again") from None


def fetch_url(url):
    """A URL given as --weights or --pretrain: downloaded once into
    ~/.paddle/weights/url/<first 16 hex digits of sha256(url)>/<its file name>, so two URLs
    ending in the same name never share a file.  A name that carries its sha256 prefix
    (`..._20220831-64d69186.pth`) is checked against it."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or 'download'
    key = hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]
    dest = os.path.join(weights_dir(), 'url', key, name)
    return dest if os.path.isfile(dest) else download(url, dest, name_sha256(name))


def released_weights(name='TSM'):
    """Path of the released model-zoo file `name`, downloading it when missing."""
    filename, sha = RELEASED[name]
    dest = os.path.join(weights_dir(), filename)
    if name == 'ResNet50_pretrained':
        folder = os.path.join(weights_dir(), 'ResNet50_pretrained')
        if os.path.isdir(folder) and os.listdir(folder):
            return folder
        download(base_url() + filename, dest, sha)
        tmp = folder + '.unpack'
        shutil.rmtree(tmp, ignore_errors=True)
        safe_extract(dest, tmp)
        inner = os.path.join(tmp, 'ResNet50_pretrained')
        os.replace(inner if os.path.isdir(inner) else tmp, folder)
        shutil.rmtree(tmp, ignore_errors=True)
        return folder
    if not os.path.isfile(dest):
        download(base_url() + filename, dest, sha)
    return dest


def fetch_if_url(path):
    """`--weights https://...` downloads once, cached by URL (fetch_url)."""
    return fetch_url(path) if path and path.startswith(('http://', 'https://')) else path
