"""Hostile uploads against a real serve.py on loopback (issue 21, the decode side): each
attack gets a quick one-line 4xx (or a bounded cost), leaves no traceback in the server's
log, and the server then answers a good request.  Media are generated here; the
headers of the y4m and PNG bombs are written by hand (nothing of their declared size is
ever made)."""
import glob
import os
import signal
import socket
import subprocess
import threading
import time
from urllib.parse import urlparse

import imageio_ffmpeg
import numpy as np
import pytest

from testing.attacks import multipart, png_header_only, y4m
from testing.served import Served
from testing.media import make_clip, write_mp4, write_video
from testing.tiny import write_config
from tests.conftest import alive
from tests.test_server import decode_workers, json_error, metric, post

WINDOWS = 250  # of the long video at WINDOW_S: under the server's 256


@pytest.fixture(scope='module')
def media(tmp_path_factory, shared_model):
    """The session's tiny config with keep_ratio on (the aspect-ratio bomb's way in) and a
    4 s decode budget, its seeded weights (conftest.shared_model: already exported), a
    good clip and a long 720p video."""
    d = tmp_path_factory.mktemp('budgets')
    sections = {k: dict(v) for k, v in shared_model['sections'].items()}
    sections['INFER'].update(keep_ratio=True, video_timeout=4)
    return {'dir': d, 'config': write_config(d / 'tiny.yaml', sections),
            'weights': shared_model['weights'], 'clip': write_mp4(d / 'clip.mp4', make_clip(30))}


def ffmpeg(*args):
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-loglevel', 'error', *args],
                   check=True, timeout=120)


def long_video(d):
    """80 s of grey at 25 fps with one keyframe: each window decodes from the start, so
    its 250 windows cost many times one window (a cost that only a deadline per request
    bounds)."""
    path = d / 'long.mp4'
    if not path.exists():
        ffmpeg('-f', 'lavfi', '-i', 'color=c=gray:size=320x180:rate=25:duration=80',
               '-c:v', 'libx264', '-preset', 'ultrafast', '-g', '9999', str(path))
    return path


def start(media, name, tmp=None):
    tmp = tmp or media['dir'] / f'tmp_{name}'
    tmp.mkdir(exist_ok=True)
    s = Served(['--config', media['config'], '--weights', media['weights'], '--precision',
                'fp32', '--decode_workers', '1', '--decode_memory_mb', '160'],
               env={'TMPDIR': str(tmp)})
    s.tmp = tmp
    return s


@pytest.fixture(scope='module')
def server(media):
    s = start(media, 'budget').wait()
    yield s
    s.stop()


def answers_a_good_request(server, media):
    r = post(server.url, media['clip'])
    assert r.status_code == 200, r.text
    assert len(r.json()['records']) == 1
    assert 'Traceback' not in server.log


def refused(server, data, filename='attack.mp4', fields=None, status=422):
    """POST an attack -> its one-line error; the log has one line about it, no traceback."""
    before = server.log.count('refused an upload')
    r = post(server.url, data=data, filename=filename, fields=fields)
    message = json_error(r, status)
    for _ in range(100):  # the log is read by a thread of the harness
        if server.log.count('refused an upload') > before:
            break
        time.sleep(0.05)
    assert server.log.count('refused an upload') == before + 1
    assert 'Traceback' not in server.log
    return message


# ---- 1. budgets before work ----

def test_tiny_windows_and_strides_are_refused_at_once(server, media):
    for fields in ({'window_seconds': '1e-300'}, {'window_seconds': '1e-6'},
                   {'window_seconds': '2', 'stride_seconds': '1e-9'}):
        assert 'at least 0.1 s' in refused(server, open(media['clip'], 'rb').read(),
                                            fields=fields)
    # 20000 frames at 25 fps: 800 s; 0.5 s windows would be 1600, counted, not made
    many = y4m(4, 4, frames=20000)
    assert 'at most 256' in refused(server, many, 'long.y4m', {'window_seconds': '0.5'})
    answers_a_good_request(server, media)


HEADER_BOMBS = {
    '16000x16000 y4m': (lambda: y4m(16000, 16000, data=False), 'pixels'),
    'y4m at 1e-9 fps': (lambda: y4m(4, 4, '1:1000000000', frames=2), 'duration'),
    'y4m at 100000 fps': (lambda: y4m(4, 4, '100000:1', frames=2), 'frame rate'),
    'aspect-ratio bomb': (lambda: y4m(4000, 2, frames=1), 'aspect ratio'),  # keep_ratio
    '16000x16000 PNG': (lambda: png_header_only(16000, 16000), 'containers'),
}


@pytest.mark.parametrize('attack', sorted(HEADER_BOMBS))
def test_header_bombs_get_a_422_before_decoding(attack, server, media):
    make, expected = HEADER_BOMBS[attack]
    assert expected in refused(server, make())
    answers_a_good_request(server, media)


def test_a_memory_bomb_fails_in_its_worker(server, media):
    """A 4K clip is within the pixel cap, but decoding its frames needs more than this
    server's --decode_memory_mb 160: the request gets an answer, the next one works."""
    path = media['dir'] / 'uhd.mp4'
    ffmpeg('-f', 'lavfi', '-i', 'testsrc=size=3840x2160:rate=10:duration=1', '-c:v',
           'libx264', '-preset', 'ultrafast', str(path))
    r = post(server.url, str(path))
    assert r.status_code in (422, 500, 503), r.text
    assert 'memory' in json_error(r, r.status_code) or 'decoder stopped' in r.json()['error']
    answers_a_good_request(server, media)


def test_one_deadline_covers_every_window(server, media):
    """One window of the long video decodes at most its 2000 frames, well within
    INFER.video_timeout (4 s); its 250 windows decode about 250000: the request is
    refused at the deadline of the whole request."""
    message = refused(server, long_video(media['dir']).read_bytes(), 'long.mp4',
                      {'window_seconds': str(80 / WINDOWS)})
    assert 'video_timeout' in message and 'whole request' in message
    answers_a_good_request(server, media)


def upload_in(server, size):
    """True once the server has stored an upload of `size` bytes (it read the body)."""
    return any(os.path.getsize(f) == size
               for f in glob.glob(str(server.tmp / 'tsm-serve-*' / '*')) if os.path.isfile(f))


def test_a_client_that_leaves_cancels_its_decode(server, media):
    """The long video's 250 windows; the client goes once the server has its upload:
    the request is cancelled (499 in the metrics), no chunk of windows after the one in
    hand is decoded, and the worker serves the next request."""
    data = long_video(media['dir']).read_bytes()
    body, ctype = multipart({'window_seconds': str(80 / WINDOWS)}, 'long.mp4', data)
    u = urlparse(server.url)
    head = (b'POST /v1/predict HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n'
            b'Content-Length: %d\r\n\r\n' % (u.netloc.encode(), ctype, len(body)))
    windows = metric(server.url, 'tsm_decoded_windows_total')
    gone = metric(server.url, 'tsm_predict_rejected_total', reason='client_gone')
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        sock.sendall(head + body)
        for _ in range(600):  # at most 30 s
            if upload_in(server, len(data)):
                break
            time.sleep(0.05)
        else:
            pytest.fail('the server never stored the upload')
    for _ in range(200):  # the server notices the client has gone
        if metric(server.url, 'tsm_predict_rejected_total', reason='client_gone') > gone:
            break
        time.sleep(0.05)
    assert metric(server.url, 'tsm_predict_rejected_total', reason='client_gone') == gone + 1
    answers_a_good_request(server, media)  # after the chunk the worker had in hand
    from server.streaming import MAX_CHUNK
    assert metric(server.url, 'tsm_decoded_windows_total') - windows - 1 <= MAX_CHUNK


def test_chunks_of_windows_bound_the_clips_in_memory():
    from server.streaming import chunk_windows
    assert chunk_windows([8, 3, 224, 224]) == 13  # configs/tsm.yaml: 64 MB / 4.8 MB
    assert chunk_windows([30, 8, 3, 256, 256]) == 1  # 10 clips x 3 crops: one window
    assert chunk_windows([4, 3, 32, 32]) == 32  # at most MAX_CHUNK


@pytest.mark.parametrize('kind', ['avi', 'mp4'])
def test_windows_decoded_in_chunks_equal_one_call(kind, media, tmp_path, monkeypatch):
    """The chunks of a request share the open upload (a decoder in order goes on where the
    last chunk stopped): the clips equal those of one call.  FFV1 avi goes through
    PyAVInOrder, H.264 mp4 through PyAVVideo."""
    from reader import KineticsReader
    from server import decode
    from server.limits import DecodeLimits
    from utils.config_utils import parse_config
    path = (write_video(tmp_path / 'v.avi', make_clip(50)) if kind == 'avi'
            else write_mp4(tmp_path / 'v.mp4', make_clip(50)))
    monkeypatch.setattr(decode, '_reader', KineticsReader('infer', parse_config(media['config']),
                                                          items=[]))
    monkeypatch.setattr(decode, '_limits', DecodeLimits())
    meta = decode.probe_upload(path, 0.4)
    spans = meta['spans']
    assert len(spans) == 5  # 50 frames at 25 fps, 0.4 s windows
    whole = decode.decode_windows(path, meta['num_frames'], spans)['clips']
    assert decode._kept is None
    decode.probe_upload(path, 0.4)
    parts = [decode.decode_windows(path, meta['num_frames'], spans[i:i + 2], last=i + 2 >= 5)
             ['clips'] for i in range(0, 5, 2)]
    assert decode._kept is None
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert not np.array_equal(whole[0], whole[1])  # the windows differ


# ---- 7. network demuxers ----

def test_playlists_concat_scripts_and_images_are_refused(server, media):
    """An HLS playlist and an ffconcat script that name a video on the server's disk
    (decord, FFmpeg with every demuxer, does follow the playlist: checked here), and an
    image: 422 each; y4m, mkv and avi are read."""
    import cv2
    import decord
    target = media['clip']
    playlist = (f'#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.2,\n'
                f'{target}\n#EXT-X-ENDLIST\n')
    (media['dir'] / 'list.mp4').write_text(playlist)
    assert len(decord.VideoReader(str(media['dir'] / 'list.mp4'))) == 30  # the attack is real
    concat = f"ffconcat version 1.0\nfile '{target}'\n"
    ok, png = cv2.imencode('.png', np.zeros((48, 64, 3), np.uint8))
    for name, data in (('list.mp4', playlist), ('list.m3u8', playlist),
                       ('concat.mp4', concat), ('frame.mp4', png.tobytes())):
        message = refused(server, data.encode() if isinstance(data, str) else data, name)
        # FFmpeg takes the playlist for HLS or for nothing, by the name's extension
        assert ('containers this server reads (mp4, mov, mkv, webm, avi, y4m)' in message
                or 'list' in name and 'not a video file' in message), (name, message)
    for name, path in (('clip.y4m', None), ('clip.mkv', 'mkv'), ('clip.avi', 'avi')):
        data = y4m(64, 48, frames=10) if path is None else open(
            write_video(media['dir'] / name, make_clip(10), fourcc='FFV1'), 'rb').read()
        r = post(server.url, data=data, filename=name)
        assert r.status_code == 200, (name, r.text)
    answers_a_good_request(server, media)


# ---- 10. malformed files ----

def test_undecodable_files_get_one_log_line_each(server, media, tmp_path):
    """Issue 6's inventory of broken files: a 422 and one log line each, no traceback."""
    from tests.test_bad_inputs import CASES, make_bad
    for kind in sorted(k for k, decodes in CASES.items() if not decodes and k != 'missing'):
        message = refused(server, make_bad(kind, tmp_path).read_bytes(), f'{kind}.mp4')
        assert message.startswith('cannot decode the video'), (kind, message)
    answers_a_good_request(server, media)


# ---- 9. shutdown ----

def upload_folders(tmp):
    return glob.glob(str(tmp / 'tsm-serve-*'))


@pytest.fixture(scope='module')
def restarted(server, media):
    """The budget server SIGKILLed (its upload folder left, with a half upload in it),
    then a new server started in the same TMPDIR."""
    (old,) = upload_folders(server.tmp)
    open(os.path.join(old, 'half-upload.mp4'), 'wb').close()
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    s = start(media, 'budget', server.tmp).wait()
    yield {'server': s, 'old': old}
    s.stop()


def test_the_next_start_removes_a_killed_servers_uploads(restarted):
    s = restarted['server']
    assert not os.path.exists(restarted['old'])
    assert len(upload_folders(s.tmp)) == 1 and s.healthy()


def test_sigterm_stops_the_server_with_a_hung_decode(restarted, media):
    """The decode worker hangs (SIGSTOP) under a request; SIGTERM ends the server, its
    worker killed, within 10 s, and its upload folder goes."""
    s = restarted['server']
    workers = decode_workers(s)
    assert len(workers) == 1
    for p in workers:
        os.kill(p, signal.SIGSTOP)
    hung = threading.Thread(target=lambda: post(s.url, media['clip']), daemon=True)
    hung.start()
    for _ in range(200):
        if metric(s.url, 'tsm_predict_in_flight') == 1:
            break
        time.sleep(0.05)
    assert metric(s.url, 'tsm_predict_in_flight') == 1
    s.proc.send_signal(signal.SIGTERM)
    try:
        s.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("SIGTERM did not stop the server within 10 s:\n" + s.log[-3000:])
    until = time.monotonic() + 5
    while any(alive(p) for p in workers) and time.monotonic() < until:
        time.sleep(0.1)
    left = [p for p in workers if alive(p)]
    for p in left:  # none should be: never leave a stopped process behind
        os.kill(p, signal.SIGKILL)
    assert not left
    assert upload_folders(s.tmp) == []
    assert 'Traceback' not in s.log, s.log[-5000:]
