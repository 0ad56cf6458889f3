"""Downloads of the released weights into ~/.paddle/weights, as the original did.

A download goes to `<file>.part` and is renamed only when complete (and its checksum
matches, where one is known), so a partial file is never taken for the real one.
Remote URLs must be https; plain http is accepted for 127.0.0.1/localhost only (tests).
"""
import hashlib
import logging
import os
import shutil
import tarfile
import urllib.parse
import urllib.request

logger = logging.getLogger(__name__)

# Base URL of the model zoo's files; TSM_WEIGHTS_BASE_URL overrides it (mirrors, tests).
BASE_URL = 'https://paddlemodels.bj.bcebos.com/video_classification/'
RELEASED = {
    # name: (file, sha256 or None when unknown)
    'TSM': ('TSM.pdparams', None),
    'ResNet50_pretrained': ('ResNet50_pretrained.tar.gz', None),
}


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


def download(url, dest, sha256=None, timeout=60):
    """Fetch url to dest atomically; resumes a `.part` left by an interrupted try when
    the server supports ranges.  Returns dest."""
    check_url(url)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + '.part'
    have = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url, headers={'Range': f'bytes={have}-'} if have else {})
    logger.info("downloading %s -> %s", url, dest)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            mode = 'ab' if have and resp.status == 206 else 'wb'
            with open(part, mode) as f:
                shutil.copyfileobj(resp, f, 1 << 20)
    except OSError as e:  # URLError, HTTPError, timeouts are all OSErrors
        raise DownloadError(
            f"cannot download {url} ({getattr(e, 'reason', e)}); download it by hand and "
            f"put it at {dest}") from None
    if sha256 and sha256sum(part) != sha256:
        os.remove(part)
        raise DownloadError(f"checksum mismatch for {url}; the partial file was removed, "
                            f"try again or put the file at {dest} by hand")
    os.replace(part, dest)
    return dest


def safe_extract(archive, target):
    """Unpack a tar archive, refusing members that would land outside target."""
    target = os.path.abspath(target)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            dest = os.path.abspath(os.path.join(target, member.name))
            if not (dest == target or dest.startswith(target + os.sep)):
                raise DownloadError(f"{archive}: member '{member.name}' escapes the target folder")
            if not (member.isfile() or member.isdir()):
                raise DownloadError(f"{archive}: member '{member.name}' is not a plain file")
        tar.extractall(target)


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
