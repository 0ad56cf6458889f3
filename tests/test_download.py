"""Downloads against a local HTTP server (127.0.0.1, no network) serving files in the
released formats: resume, restart, checksums, refusals and one-line errors."""
import hashlib
import io
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
from utils.download import DownloadError, download, released_weights, safe_extract
from utils.lod_tensor import write_lod_tensor


class Files:
    """What the server serves, how, and what it was asked."""

    def __init__(self):
        self.data, self.mode, self.requests = {}, {}, []


def make_handler(files):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            rng, path = self.headers.get('Range'), self.path.split('?')[0]
            files.requests.append((path, rng))
            mode = files.mode.get(path, '')
            if mode.startswith('redirect:'):
                self.send_response(302)
                self.send_header('Location', mode[len('redirect:'):])
                self.end_headers()
                return
            data = files.data.get(path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if rng and mode != 'norange':
                start = int(re.match(r'bytes=(\d+)-', rng).group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header('Content-Range', f'bytes */{len(data)}')
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            if mode == 'cut':  # the connection drops after a third, once
                files.mode.pop(path)
                self.wfile.write(body[:len(body) // 3])
                return
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
    server.data.clear()
    server.mode.clear()
    server.requests.clear()
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
    from models.weights import read_state
    state, kind = read_state(path)
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
    from models.weights import read_state
    state, kind = read_state(folder)
    assert kind == 'dir' and set(state) == set(FLUID) - {'fc_0.w_0'}  # ImageNet FC dropped
    np.testing.assert_array_equal(state['bn_conv1_mean'], FLUID['bn_conv1_mean'])
    assert released_weights('ResNet50_pretrained') == folder and len(server.requests) == 1


BLOB = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def test_interrupted_download_resumes_with_a_range(home, server):
    server.data['/big.bin'], server.mode['/big.bin'] = BLOB, 'cut'
    dest = str(home / 'big.bin')
    with pytest.raises(DownloadError, match='ended after 100000 of 300000 bytes.*run again to '
                                            'resume') as err:
        download(server.url + '/big.bin', dest)
    assert '\n' not in str(err.value) and dest in str(err.value)
    have = os.path.getsize(dest + '.part')
    assert 0 < have < len(BLOB) and not os.path.exists(dest)
    assert download(server.url + '/big.bin', dest) == dest
    assert server.requests[-1] == ('/big.bin', f'bytes={have}-')
    assert open(dest, 'rb').read() == BLOB and not os.path.exists(dest + '.part')


@pytest.mark.parametrize('stale', [b'garbage', BLOB + b'more'], ids=['no-range', 'past-end'])
def test_a_part_the_server_cannot_continue_is_restarted(home, server, stale):
    """A server that ignores Range answers 200 (restart); one past the end answers 416."""
    server.data['/big.bin'] = BLOB
    if stale == b'garbage':
        server.mode['/big.bin'] = 'norange'
    home.mkdir(parents=True)
    dest = str(home / 'big.bin')
    with open(dest + '.part', 'wb') as f:
        f.write(stale)
    download(server.url + '/big.bin', dest)
    assert open(dest, 'rb').read() == BLOB


def test_checksum_is_checked(home, server, monkeypatch):
    server.data['/TSM.pdparams'] = BLOB
    monkeypatch.setitem(dl.RELEASED, 'TSM', ('TSM.pdparams', '0' * 64))
    with pytest.raises(DownloadError, match='checksum mismatch .*removed') as err:
        released_weights('TSM')
    assert '\n' not in str(err.value)
    assert not os.listdir(home)  # neither the file nor its .part
    monkeypatch.setitem(dl.RELEASED, 'TSM', ('TSM.pdparams', hashlib.sha256(BLOB).hexdigest()))
    assert open(released_weights('TSM'), 'rb').read() == BLOB


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
    server.mode['/moved.pdparams'] = 'redirect:http://example.com/TSM.pdparams'
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
    from utils.jobs import fetch_if_url
    cfg = parse_config('configs/tsm.yaml')
    cfg.MODEL.update(num_layers=18, num_classes=3)
    model = get_model('TSM', cfg, 'infer')
    buf = io.BytesIO()
    paddle.save(model.state_dict(), buf)
    server.data['/x.pdparams'] = buf.getvalue()
    url = server.url + '/x.pdparams?download=1'
    path = fetch_if_url(url)
    assert path == str(home / 'x.pdparams')
    other = get_model('TSM', cfg, 'infer')
    load_weights(other, path)
    np.testing.assert_array_equal(other.fc.weight.numpy(), model.fc.weight.numpy())
    assert fetch_if_url(url) == path and len(server.requests) == 1
