"""Downloads against a local HTTP server (127.0.0.1, no network) serving files in the
released formats: resume, restart, checksums, refusals and one-line errors."""
import hashlib
import io
import json
import os
import pickle
import re
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from utils import download as dl
from utils.download import DownloadError, download, fetch_url, released_weights, safe_extract
from testing.lod_files import write_lod_tensor


class Files:
    """What the server serves, how, and what it was asked and sent."""

    def __init__(self):
        self.data, self.mode, self.mtime, self.redirect = {}, {}, {}, {}
        self.requests, self.status, self.sent = [], [], []

    def clear(self):
        for d in (self.data, self.mode, self.mtime, self.redirect):
            d.clear()
        for lst in (self.requests, self.status, self.sent):
            lst.clear()


def etag(data):
    return '"%s"' % hashlib.sha256(data).hexdigest()[:16]


def make_handler(files):
    """Flags in files.mode[path]: 'cut' (the connection drops after a third, once),
    'norange' (Range ignored), 'lastmodified' (Last-Modified instead of an ETag), 'weaketag',
    'novalidators', 'ignore-if-range' (a range is served even for a stale If-Range)."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def validators(self, path, data, flags):
            if 'novalidators' in flags:
                return {}
            if 'lastmodified' in flags:
                return {'Last-Modified': files.mtime.get(path, 'Wed, 21 Oct 2015 07:28:00 GMT')}
            return {'ETag': ('W/' if 'weaketag' in flags else '') + etag(data)}

        def do_GET(self):
            rng, if_range = self.headers.get('Range'), self.headers.get('If-Range')
            path = self.path.split('?')[0]
            files.requests.append((path, rng, if_range))
            if path in files.redirect:
                self.send_response(302)
                self.send_header('Location', files.redirect[path])
                self.end_headers()
                return
            data, flags = files.data.get(path), files.mode.get(path, set())
            if data is None:
                self.send_error(404)
                return
            validators = self.validators(path, data, flags)
            current = if_range is None or if_range in validators.values()
            start = 0
            if rng and 'norange' not in flags and (current or 'ignore-if-range' in flags):
                start = int(re.match(r'bytes=(\d+)-', rng).group(1))
                if start >= len(data):
                    files.status.append(416)
                    self.send_response(416)
                    self.send_header('Content-Range', f'bytes */{len(data)}')
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                files.status.append(206)
                self.send_response(206)
                self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
            else:
                files.status.append(200)
                self.send_response(200)
            body = data[start:]
            for name, value in validators.items():
                self.send_header(name, value)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            if 'cut' in flags:
                flags.discard('cut')
                body = body[:len(body) // 3]
            files.sent.append(len(body))  # before writing: the client may be done first
            self.wfile.write(body)
    return Handler


@pytest.fixture(scope='module')
def server():
    files = Files()
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), make_handler(files))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    files.url = f'http://127.0.0.1:{httpd.server_address[1]}'
    yield files
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch, server):
    """HOME in tmp, the released files' base URL on the local server, a clean slate."""
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.setenv('TSM_WEIGHTS_BASE_URL', server.url + '/')
    server.clear()
    return tmp_path / '.paddle' / 'weights'


FLUID = {  # a few arrays under the model zoo's names
    'conv1_weights': np.random.default_rng(0).standard_normal((64, 3, 7, 7)).astype('float32'),
    'bn_conv1_scale': np.ones(64, 'float32'),
    'bn_conv1_mean': np.arange(64, dtype='float32'),
    'fc_0.w_0': np.zeros((2048, 400), 'float32'),
}


def tar_gz(members):
    """{name: bytes or None (a folder) or ('link', target)} -> tar.gz bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz', compresslevel=1) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def lod_bytes(tmp_path, array):
    path = tmp_path / 'tensor.tmp'
    write_lod_tensor(str(path), array)
    return path.read_bytes()


def test_released_tsm_pdparams_downloads_once(home, server):
    server.data['/TSM.pdparams'] = pickle.dumps(FLUID, protocol=2)  # the model zoo's format
    path = released_weights('TSM')
    assert path == str(home / 'TSM.pdparams')
    from models.weight_files import read_checkpoint
    state, kind, _ = read_checkpoint(path)
    assert kind == 'pickle' and set(state) == set(FLUID)
    np.testing.assert_array_equal(state['conv1_weights'], FLUID['conv1_weights'])
    assert released_weights('TSM') == path and len(server.requests) == 1  # no second fetch
    assert not os.path.exists(path + '.part')


def test_released_resnet50_tar_unpacks_to_its_folder(home, server, tmp_path):
    members = {'ResNet50_pretrained': None}
    for name, arr in FLUID.items():
        members[f'ResNet50_pretrained/{name}'] = lod_bytes(tmp_path, arr)
    server.data['/ResNet50_pretrained.tar.gz'] = tar_gz(members)
    folder = released_weights('ResNet50_pretrained')
    assert folder == str(home / 'ResNet50_pretrained')
    from models.weight_files import read_checkpoint
    state, kind, _ = read_checkpoint(folder)
    assert kind == 'dir' and set(state) == set(FLUID) - {'fc_0.w_0'}  # ImageNet FC dropped
    np.testing.assert_array_equal(state['bn_conv1_mean'], FLUID['bn_conv1_mean'])
    assert released_weights('ResNet50_pretrained') == folder and len(server.requests) == 1


BLOB = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
NEW_BLOB = np.random.default_rng(2).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def interrupted(server, home, flags=()):
    """Serve BLOB at /big.bin, cut after a third: -> (url, dest, bytes in the .part)."""
    server.data['/big.bin'], server.mode['/big.bin'] = BLOB, {'cut', *flags}
    url, dest = server.url + '/big.bin', str(home / 'big.bin')
    with pytest.raises(DownloadError, match='ended after 100000 of 300000 bytes') as err:
        download(url, dest)
    assert '\n' not in str(err.value) and dest in str(err.value)
    have = os.path.getsize(dest + '.part')
    assert have == 100_000 and not os.path.exists(dest)
    return url, dest, have


@pytest.mark.parametrize('flags', [(), ('lastmodified',)], ids=['etag', 'last-modified'])
def test_an_unchanged_remote_file_resumes_with_a_range(home, server, flags):
    url, dest, have = interrupted(server, home, flags)
    validator = ('Wed, 21 Oct 2015 07:28:00 GMT' if flags else etag(BLOB))
    assert download(url, dest) == dest
    assert server.requests[-1] == ('/big.bin', f'bytes={have}-', validator)
    assert server.status[-1] == 206 and server.sent[-1] == len(BLOB) - have  # only the rest
    assert open(dest, 'rb').read() == BLOB
    assert not os.path.exists(dest + '.part') and not os.path.exists(dest + '.part.json')


@pytest.mark.parametrize('flags', [(), ('lastmodified',), ('ignore-if-range',)],
                         ids=['etag', 'last-modified', 'server-ignores-if-range'])
def test_a_remote_file_changed_since_the_part_began_is_downloaded_whole(home, server, flags):
    url, dest, have = interrupted(server, home, flags)
    old = ('Wed, 21 Oct 2015 07:28:00 GMT' if flags == ('lastmodified',) else etag(BLOB))
    server.data['/big.bin'] = NEW_BLOB  # same size, other bytes, a new ETag / date
    server.mtime['/big.bin'] = 'Thu, 22 Oct 2015 07:28:00 GMT'
    n = len(server.requests)
    download(url, dest)
    assert server.requests[n] == ('/big.bin', f'bytes={have}-', old)  # asked with If-Range
    # the whole new file in one 200; a server that sent a range anyway was asked again
    assert len(server.requests) == n + (2 if 'ignore-if-range' in flags else 1)
    assert server.status[-1] == 200 and server.sent[-1] == len(NEW_BLOB)
    got = open(dest, 'rb').read()
    assert got == NEW_BLOB and got != BLOB[:have] + NEW_BLOB[have:]


@pytest.mark.parametrize('flag', ['novalidators', 'weaketag'])
def test_a_part_without_a_validator_is_restarted_not_resumed(home, server, caplog, flag):
    """No ETag/Last-Modified (or only a weak ETag, which If-Range does not admit): nothing
    tells whether the remote file changed, so the download starts again from byte 0."""
    server.data['/big.bin'], server.mode['/big.bin'] = BLOB, {'cut', flag}
    url, dest = server.url + '/big.bin', str(home / 'big.bin')
    with pytest.raises(DownloadError, match='run again, or download it by hand'):
        download(url, dest)
    assert os.path.getsize(dest + '.part') == 100_000
    assert not os.path.exists(dest + '.part.json')
    with caplog.at_level('INFO', logger='utils.download'):
        download(url, dest)
    assert 'from the start' in caplog.text
    assert server.requests[-1] == ('/big.bin', None, None)  # no Range asked
    assert server.sent[-1] == len(BLOB) and open(dest, 'rb').read() == BLOB


@pytest.mark.parametrize('stale', [b'garbage', BLOB + b'more'], ids=['no-range', 'past-end'])
def test_a_part_the_server_cannot_continue_is_restarted(home, server, stale):
    """A server that ignores Range answers 200 (restart); one past the end answers 416."""
    server.data['/big.bin'] = BLOB
    if stale == b'garbage':
        server.mode['/big.bin'] = {'norange'}
    home.mkdir(parents=True)
    dest = str(home / 'big.bin')
    with open(dest + '.part', 'wb') as f:
        f.write(stale)
    with open(dest + '.part.json', 'w') as f:  # begun on this very version of the file
        json.dump({'validator': etag(BLOB)}, f)
    download(server.url + '/big.bin', dest)
    assert server.requests[0] == ('/big.bin', f'bytes={len(stale)}-', etag(BLOB))
    assert server.status == ([200] if stale == b'garbage' else [416, 200])
    assert open(dest, 'rb').read() == BLOB


def test_checksum_is_checked(home, server):
    """download() checks a full sha256 or a prefix of it; the released table holds only
    full sha256s or None."""
    server.data['/w.bin'] = BLOB
    url, dest = server.url + '/w.bin', str(home / 'w.bin')
    right = hashlib.sha256(BLOB).hexdigest()
    wrong = hashlib.sha256(BLOB + b'x').hexdigest()
    for bad in (wrong, wrong[:8]):
        with pytest.raises(DownloadError, match='checksum mismatch .*removed') as err:
            download(url, dest, sha256=bad)
        assert '\n' not in str(err.value) and dest in str(err.value)
        assert not os.listdir(home)  # neither the file nor its .part nor the sidecar
    assert download(url, dest, sha256=right[:8]) == dest
    os.remove(dest)
    assert open(download(url, dest, sha256=right), 'rb').read() == BLOB
    with pytest.raises(ValueError):
        download(url, dest + '2', sha256='64D69186')  # not lowercase hex: a caller's bug
    for name, (filename, sha) in dl.RELEASED.items():
        assert os.path.splitext(filename)[0].startswith(name)
        assert sha is None or re.fullmatch(r'[0-9a-f]{64}', sha), name


def test_two_urls_ending_in_the_same_name_get_two_files(home, server):
    from utils.download import fetch_if_url
    server.data['/a/x.pdparams'], server.data['/b/x.pdparams'] = BLOB, NEW_BLOB
    a, b = server.url + '/a/x.pdparams', server.url + '/b/x.pdparams'
    path_a, path_b = fetch_url(a), fetch_if_url(b)
    assert path_a != path_b
    for url, path, data in ((a, path_a, BLOB), (b, path_b, NEW_BLOB)):
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        assert path == str(home / 'url' / key / 'x.pdparams')
        assert open(path, 'rb').read() == data
    assert fetch_if_url(a) == path_a and fetch_url(b) == path_b and len(server.requests) == 2
    assert fetch_if_url('local/x.pdparams') == 'local/x.pdparams'


MMACTION2_NAME = 'tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb_20220831-64d69186.pth'


def test_a_name_carrying_its_sha256_prefix_is_checked(home, server):
    """OpenMMLab's publish_model.py names a file <name>_<date>-<sha256[:8]>.pth."""
    assert dl.name_sha256(MMACTION2_NAME) == '64d69186'
    for plain in ('TSM.pdparams', 'TSM_k400.pdparams', 'model-20220831.pth', 'x_20220831.pth'):
        assert dl.name_sha256(plain) is None
    good = f'/ckpt/tsm_20220831-{hashlib.sha256(BLOB).hexdigest()[:8]}.pth'
    bad = f'/ckpt/tsm_20220831-{hashlib.sha256(NEW_BLOB).hexdigest()[:8]}.pth'
    server.data[good] = server.data[bad] = BLOB
    assert open(fetch_url(server.url + good), 'rb').read() == BLOB
    with pytest.raises(DownloadError, match=r'checksum mismatch .*by hand') as err:
        fetch_url(server.url + bad)
    assert '\n' not in str(err.value)
    key = hashlib.sha256((server.url + bad).encode()).hexdigest()[:16]
    assert not os.listdir(home / 'url' / key)  # nothing cached, nothing left to resume


def test_no_network_is_one_line_naming_the_file_and_where_to_put_it(home, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    monkeypatch.setenv('TSM_WEIGHTS_BASE_URL', f'http://127.0.0.1:{port}/')
    with pytest.raises(DownloadError) as err:
        released_weights('TSM')
    msg = str(err.value)
    assert '\n' not in msg and 'TSM.pdparams' in msg and str(home / 'TSM.pdparams') in msg
    assert 'by hand' in msg


def test_plain_http_is_refused_except_locally_redirects_included(home, server, monkeypatch):
    with pytest.raises(DownloadError, match='https only'):
        download('http://example.com/TSM.pdparams', str(home / 'x'))
    monkeypatch.setenv('TSM_WEIGHTS_BASE_URL', 'http://paddlemodels.example.com/')
    with pytest.raises(DownloadError, match='https only'):
        released_weights('TSM')
    server.redirect['/moved.pdparams'] = 'http://example.com/TSM.pdparams'
    with pytest.raises(DownloadError, match='https only'):
        download(server.url + '/moved.pdparams', str(home / 'moved.pdparams'))
    assert not os.path.exists(home / 'moved.pdparams')


def test_tar_members_outside_the_folder_or_links_are_refused(home, server, tmp_path):
    server.data['/ResNet50_pretrained.tar.gz'] = tar_gz({'ResNet50_pretrained/../../evil': b'x'})
    with pytest.raises(DownloadError, match="member 'ResNet50_pretrained/../../evil' escapes"):
        released_weights('ResNet50_pretrained')
    assert not (home.parent / 'evil').exists() and not (home / 'evil').exists()
    assert not (home / 'ResNet50_pretrained').exists()
    link = tmp_path / 'link.tar.gz'
    link.write_bytes(tar_gz({'a': ('link', '/etc/passwd')}))
    with pytest.raises(DownloadError, match="'a' is not a plain file"):
        safe_extract(str(link), str(tmp_path / 'out'))
    html = tmp_path / 'page.tar.gz'
    html.write_bytes(b'<html>not found</html>')
    with pytest.raises(DownloadError, match='not a readable tar archive'):
        safe_extract(str(html), str(tmp_path / 'out'))


def test_weights_url_is_fetched_once_and_loads(home, server):
    import paddle

    from models import get_model, load_weights
    from utils.config_utils import parse_config
    from utils.download import fetch_if_url
    cfg = parse_config('configs/tsm.yaml')
    cfg.MODEL.update(num_layers=18, num_classes=3)
    model = get_model('TSM', cfg, 'infer')
    buf = io.BytesIO()
    paddle.save(model.state_dict(), buf)
    server.data['/x.pdparams'] = buf.getvalue()
    url = server.url + '/x.pdparams?download=1'
    path = fetch_if_url(url)
    key = hashlib.sha256(url.encode()).hexdigest()[:16]  # the whole URL, query included
    assert path == str(home / 'url' / key / 'x.pdparams')
    other = get_model('TSM', cfg, 'infer')
    load_weights(other, path)
    np.testing.assert_array_equal(other.fc.weight.numpy(), model.fc.weight.numpy())
    assert fetch_if_url(url) == path and len(server.requests) == 1
