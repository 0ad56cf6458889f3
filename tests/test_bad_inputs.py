"""Bad input never gives a traceback or a hang: a decodable oddity gives frames, a broken
file a counted skip with its name in the warning, a bad list/config/weights a one-line error.
The table below is the inventory of bad videos the reader is tested on."""
import logging
import pickle
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from reader import get_reader
from testing.media import make_clip, write_mp4, write_video
from testing.tiny import tiny_sections, write_config
from tests.conftest import run_cli, run_main
from utils.config_utils import parse_config

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args):
    subprocess.run([FFMPEG, '-y', '-loglevel', 'error', *args], check=True)


def make_bad(kind, d):
    """Write one bad or odd video; -> its path."""
    p = d / f'{kind}.mp4'
    if kind == 'zero_bytes':
        p.write_bytes(b'')
    elif kind == 'truncated_mp4':
        full = write_mp4(d / 'full.mp4', make_clip(20), extra=())  # moov at the end: cut off
        p.write_bytes(open(full, 'rb').read()[:2000])
    elif kind == 'text_renamed':
        p.write_text('this is not a video\n' * 20)
    elif kind == 'random_bytes':
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == 'audio_only':
        ffmpeg('-f', 'lavfi', '-i', 'sine=frequency=440:duration=1', '-c:a', 'aac', str(p))
    elif kind == 'missing':
        pass
    elif kind == 'fewer_frames_than_segments':
        write_mp4(p, make_clip(3))
    elif kind == 'one_frame':
        write_mp4(p, make_clip(1))
    elif kind == 'rotation_90':
        ffmpeg('-display_rotation', '90', '-f', 'lavfi', '-i',
               'testsrc=size=64x48:rate=10:duration=1', '-c:v', 'libx264', str(p))
    elif kind == 'grayscale':
        ffmpeg('-f', 'lavfi', '-i', 'testsrc=size=64x48:rate=10:duration=1', '-pix_fmt', 'gray',
               '-c:v', 'ffv1', str(d / 'gray.mkv'))
        p = d / 'gray.mkv'
    elif kind == 'tiny_16x16':
        write_video(d / 'tiny.avi', make_clip(10, 16, 16))
        p = d / 'tiny.avi'
    elif kind == 'large_4k':
        ffmpeg('-f', 'lavfi', '-i', 'testsrc=size=3840x2160:rate=10:duration=0.3', '-c:v',
               'libx264', '-preset', 'ultrafast', str(p))
    elif kind == 'header_longer_than_data':
        full = write_mp4(d / 'full2.mp4', make_clip(20))  # faststart: header first
        p.write_bytes(open(full, 'rb').read()[:int(0.6 * (d / 'full2.mp4').stat().st_size)])
    elif kind == 'pkl_with_code':
        class Evil:
            def __reduce__(self):
                return (print, ('pwned',))
        p = d / 'evil.pkl'
        p.write_bytes(pickle.dumps(('v', 0, Evil()), protocol=2))
    return p


# kind -> True when frames must come out, False when it must be a counted skip
CASES = {
    'zero_bytes': False, 'truncated_mp4': False, 'text_renamed': False, 'random_bytes': False,
    'audio_only': False, 'missing': False, 'pkl_with_code': False,
    'fewer_frames_than_segments': True, 'one_frame': True, 'rotation_90': True,
    'grayscale': True, 'tiny_16x16': True, 'large_4k': True, 'header_longer_than_data': True,
}


MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def oracle_frames(path):
    """Every frame as ffmpeg itself decodes it (rotation applied, grey made RGB), each
    scaled as the original does (short side 36, the long one int(36 * 4 / 3) = 48, PIL
    bilinear), the centre 32x32 cut out, normalised: float [N, 3, 32, 32]."""
    from PIL import Image
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt='rgb24')
    meta = next(gen)
    w, h = meta['size']
    out = []
    for raw in gen:
        img = Image.fromarray(np.frombuffer(raw, np.uint8).reshape(h, w, 3))
        if min(w, h) != 36:
            img = img.resize((48, 36) if w >= h else (36, 48), Image.BILINEAR)
        x, y = round((img.width - 32) / 2), round((img.height - 32) / 2)
        crop = np.asarray(img.crop((x, y, x + 32, y + 32)), np.float64) / 255.0
        out.append(((crop - MEAN) / STD).transpose(2, 0, 1))
    return np.stack(out)


def assert_frames_of(path, clip, exact_indices=True):
    """The 4 frames the reader gave are the video's frames at the middle of its 4
    segments (indices computed here by hand), within the two decoders' rounding; for a
    file cut short, each is at least one real frame of it."""
    want = oracle_frames(path)
    n = len(want)
    avg = n // 4
    idx = [((avg - 1) // 2 + i * avg if avg >= 1 else i) % n for i in range(4)]
    for t in range(4):
        errors = np.abs(want - clip[t]).mean(axis=(1, 2, 3))
        if exact_indices:
            assert errors[idx[t]] < 0.1, (t, idx[t], errors.round(3))
        else:
            assert errors.min() < 0.1, (t, errors.round(3))


@pytest.mark.parametrize('kind', sorted(CASES))
def test_bad_video(kind, tmp_path, caplog):
    path = make_bad(kind, tmp_path)
    sections = tiny_sections()
    if kind == 'pkl_with_code':
        sections['MODEL']['format'] = 'pkl'
    (tmp_path / 'v.list').write_text(f"{path} 1\n")
    cfg = parse_config(write_config(tmp_path / 'c.yaml', sections))
    ds = get_reader('TSM', 'valid', cfg, filelist=str(tmp_path / 'v.list'))
    with caplog.at_level(logging.WARNING):
        item = ds[0]
    if CASES[kind]:
        assert item is not None, caplog.text
        assert item[0].shape == (4, 3, 32, 32) and np.isfinite(item[0]).all()
        assert_frames_of(path, item[0], exact_indices=kind != 'header_longer_than_data')
    else:
        assert item is None
        assert f'skipping video: {path}' in caplog.text
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_rotation_metadata_is_applied(tmp_path):
    from reader.video_backends import open_video
    frames = open_video(str(make_bad('rotation_90', tmp_path))).get_frames([0])
    assert frames.shape == (1, 64, 48, 3)  # 64x48 source displayed rotated: 48 wide, 64 high


def test_video_with_one_frame_repeats_it(tmp_path):
    path = write_mp4(tmp_path / 'one.mp4', make_clip(1))
    (tmp_path / 'v.list').write_text(f"{path} 0\n")
    sections = tiny_sections()
    sections['VALID'].update(short_size=48, target_size=48)
    ds = get_reader('TSM', 'valid', parse_config(write_config(tmp_path / 'c.yaml', sections)),
                    filelist=str(tmp_path / 'v.list'))
    imgs = ds[0][0]
    assert all(np.array_equal(imgs[0], imgs[t]) for t in range(4))


def test_every_video_failing_stops_with_a_clear_error(tmp_path):
    (tmp_path / 'a.mp4').write_bytes(b'')
    (tmp_path / 'v.list').write_text(f"{tmp_path / 'a.mp4'} 0\n{tmp_path / 'b.mp4'} 1\n")
    sections = tiny_sections()
    for s in ('TRAIN', 'VALID', 'TEST'):
        sections[s]['filelist'] = str(tmp_path / 'v.list')
    cfg = write_config(tmp_path / 'c.yaml', sections)
    res = run_cli('train.py', '--config', cfg, '--pretrain', 'none', '--save_dir', str(tmp_path))
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    assert 'every video of' in res.stderr and 'failed to decode in epoch 0 (2 tried)' in res.stderr
    import eval as eval_script  # ends before any work: in this process
    code, _, err = run_main(eval_script.main, '--config', cfg, '--weights',
                            str(tmp_path / 'none.pdparams'), '--cpu_threads', '1')
    assert code == 2 and 'weights not found' in err


def test_bad_list_through_the_cli_names_file_and_line(tmp_path):
    good = write_video(tmp_path / 'g.avi', make_clip(8))
    (tmp_path / 'v.list').write_text(f"{good} 0\n{good} x\n")
    sections = tiny_sections()
    sections['TRAIN']['filelist'] = str(tmp_path / 'v.list')
    res = run_cli('train.py', '--config', write_config(tmp_path / 'c.yaml', sections),
                  '--pretrain', 'none', '--valid_interval', '0')
    assert res.returncode == 2 and res.stderr.strip() == (
        f"error: {tmp_path / 'v.list'}:2: label 'x' is not an integer (expected 'path label')")


def test_weights_with_a_code_payload_are_refused(tmp_path):
    from models import WeightsError, get_model, load_weights
    marker = tmp_path / 'pwned'

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), 'w'))  # would create a file when unpickled

    path = tmp_path / 'evil.pdparams'
    path.write_bytes(pickle.dumps({'conv1_weights': Payload()}, protocol=2))
    cfg = parse_config('configs/tsm.yaml')
    cfg.MODEL.num_layers = 18
    with pytest.raises(WeightsError, match=r"cannot read weights .*evil.pdparams: refused to load '(io|builtins).open'"):
        load_weights(get_model('TSM', cfg, 'infer'), str(path))
    assert not marker.exists()
    import eval as eval_script  # ends before any work: in this process
    code, _, err = run_main(eval_script.main, '--config', 'configs/tsm.yaml', '--weights',
                            str(path), '-o', 'MODEL.num_layers=18', '--cpu_threads', '1')
    assert code == 2 and 'refused to load' in err and not marker.exists()
