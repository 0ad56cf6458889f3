"""predict.py end to end: the H.264 decoder that skips the frames no sample needs gives
decord's frames; the table-driven normalisation gives the formula's bits; the rule that
shares the cores between decoding workers and the engine, and an explicit value beating
it; a folder predicted with decoding workers gives the records of one predicted without,
and of each video predicted alone."""
import json
import re
import subprocess

import av
import imageio_ffmpeg
import numpy as np
import pytest

from reader.transforms import normalize
from reader.video_backends import DecordVideo, PyAVVideo, open_video
from testing.media import write_video
from testing.tiny import write_config
from tests.conftest import run_cli
from utils.config_utils import AttrDict
from utils.env import available_cpus
from inference.core_plan import plan_predict


def write_h264(path, frames=40, h=64, w=80, fps=25, container_args=()):
    """Lossy H.264 with B-frames in pyramids (some frames referenced by no other), GOPs
    of 12; frame i's 16x16 top-left block is grey level 6*i, so a frame names itself."""
    yy, xx = np.mgrid[0:h, 0:w]
    clip = np.zeros((frames, h, w, 3), np.uint8)
    for i in range(frames):
        clip[i, ..., 0] = (xx * 3 + i * 2) % 256  # moving: P- and B-frames pay off
        clip[i, ..., 1] = (yy * 3) % 256
        clip[i, ..., 2] = 128
        clip[i, :16, :16] = 6 * i
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-loglevel', 'error', '-f', 'rawvideo',
           '-pix_fmt', 'rgb24', '-s', f'{w}x{h}', '-r', str(fps), '-i', '-', '-c:v', 'libx264',
           '-pix_fmt', 'yuv420p', '-crf', '10', '-g', '12', '-bf', '3', '-x264-params',
           'b-adapt=0:b-pyramid=normal', *container_args, str(path)]
    subprocess.run(cmd, input=clip.tobytes(), check=True)
    return str(path)


def frame_numbers(frames):
    return [int(round(f[2:14, 2:14].mean() / 6)) for f in frames]


@pytest.fixture(scope='module')
def h264(tmp_path_factory):
    return write_h264(tmp_path_factory.mktemp('h264') / 'b.mp4')


def test_the_file_has_frames_no_other_refers_to(h264):
    """So the tests below exercise the skipping: FFmpeg's NONREF setting leaves frames out."""
    with av.open(h264) as c:
        every = sum(1 for _ in c.decode(video=0))
    with av.open(h264) as c:
        c.streams.video[0].codec_context.skip_frame = 'NONREF'
        kept = sum(1 for _ in c.decode(video=0))
    assert every == 40 and kept < every - 8


@pytest.mark.parametrize('threads', [1, 2, 3])
def test_pyav_gives_decords_frames(h264, threads):
    video, ref = open_video(h264, threads=threads), DecordVideo(h264)
    assert isinstance(video, PyAVVideo)
    assert video.num_frames == ref.num_frames == 40 and video.fps == ref.fps == 25
    rng = np.random.default_rng(0)
    for idx in ([2, 7, 12, 17, 22, 27, 32, 37], [39, 0, 5, 5], [13], [38, 39],
                rng.integers(0, 40, 9).tolist()):
        got = video.get_frames(idx)
        assert frame_numbers(got) == list(idx)
        np.testing.assert_array_equal(got, ref.get_frames(idx))
    video.close()


def test_one_video_shares_its_keyframe_runs_among_decoders(h264):
    """threads=2: frames from different GOPs go to two decoders (containers of their own)
    unless one run holds most of the frames to decode; the frames stay decord's."""
    with av.open(h264) as c:
        packets = [(p.pts, p.is_keyframe) for p in c.demux(video=0) if p.size]
    pts = sorted(p for p, _ in packets)
    k = sorted(pts.index(p) for p, key in packets if key)  # keyframes' frame indices
    assert len(k) >= 3 and k[1] >= 9 and k[2] - k[1] >= 9  # GOPs of about 12
    ref = DecordVideo(h264)
    spread = [k[0] + 2, k[0] + 7, k[1] + 2, k[1] + 7, k[2] + 2, k[2] + 7]  # runs of 8 frames
    lopsided = [1, k[1] - 1, k[2]]  # runs of k[1] - 1 frames and of one
    video = PyAVVideo(h264, threads=2)
    np.testing.assert_array_equal(video.get_frames(spread), ref.get_frames(spread))
    assert len(video._more) == 2 and not video._decoded  # two decoders, not the first
    video.close()
    video = PyAVVideo(h264, threads=2)
    np.testing.assert_array_equal(video.get_frames(lopsided), ref.get_frames(lopsided))
    assert not video._more and video._decoded  # one decoder with frame threads
    video.close()


def test_mkv_too_and_avi_rotation_and_bad_index_go_to_decord(h264, tmp_path):
    mkv = write_h264(tmp_path / 'b.mkv')
    assert isinstance(open_video(mkv), PyAVVideo)
    avi = write_video(tmp_path / 'v.avi', np.zeros((5, 16, 16, 3), np.uint8))
    assert isinstance(open_video(avi), DecordVideo)  # AVI's made-up timestamps
    rotated = tmp_path / 'r.mp4'
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-loglevel', 'error',
                    '-display_rotation', '90', '-i', h264, '-c', 'copy', str(rotated)], check=True)
    video = open_video(str(rotated))
    got = video.get_frames([3, 30])
    assert got.shape == (2, 80, 64, 3)  # upright, as decord turns it
    np.testing.assert_array_equal(got, DecordVideo(str(rotated)).get_frames([3, 30]))
    with pytest.raises(Exception) as past:  # past the index: decord's own answer
        open_video(h264).get_frames([40])
    with pytest.raises(type(past.value)):
        DecordVideo(h264).get_frames([40])


def test_normalize_gives_the_formulas_bits_for_every_value():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    values = np.arange(256, dtype=np.uint8)
    rows = np.stack([values, values[::-1], np.roll(values, 7)], -1)  # [256, 3]: every value
    frames = np.tile(rows[None, None], (4, 6, 1, 1))[:, 1:5]  # [4, 4, 256, 3], a view (a crop)
    x = frames.astype(np.float32) / np.float32(255)  # the formula, per pixel, in float32
    want = ((x - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(0, 3, 1, 2)
    got = normalize(frames, mean, std, seg_num=2, seglen=2)
    assert got.shape == (2, 6, 4, 256) and got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32),
                                  want.reshape(2, 6, 4, 256).view(np.uint32))


def infer(cap):
    return AttrDict(num_reader_threads=cap)


def test_plan_one_video_decodes_here_a_folder_in_workers():
    one = plan_predict(1, infer(12), cpus=2)
    assert (one.workers, one.engine_threads, one.decode_threads) == (0, 2, 2)
    many = plan_predict(30, infer(12), cpus=2)
    assert (many.workers, many.engine_threads, many.decode_threads) == (2, 2, 1)
    assert plan_predict(2, infer(12), cpus=8).workers == 2  # no more workers than videos
    assert plan_predict(30, infer(12), cpus=8)[:3] == (8, 8, 1)  # the engine: every core
    # the config file's value bounds the workers; 0 (the tests' tiny configs): none
    assert plan_predict(30, infer(1), cpus=2).workers == 1
    none = plan_predict(30, infer(0), cpus=2)
    assert (none.workers, none.engine_threads, none.decode_threads) == (0, 2, 2)


def test_plan_explicit_values_win():
    asked = plan_predict(1, infer(2), {'num_reader_threads'}, cpus=2)
    assert asked.workers == 2 and asked.decode_threads == 1
    assert plan_predict(30, infer(0), {'num_reader_threads'}, cpus=2).workers == 0
    assert plan_predict(30, infer(5), {'num_reader_threads'}, cpus=2).workers == 2  # the cores
    assert plan_predict(30, infer(12), (), cpu_threads=2, cpus=2).engine_threads == 2
    assert plan_predict(1, infer(12), (), cpu_threads=1, cpus=2).engine_threads == 1


@pytest.fixture
def setup(tmp_path, shared_model):
    """The session's tiny model (exported once: conftest.shared_model) with the shipped
    configs' 12 reader workers, and a folder of 4 videos."""
    sections = {k: dict(v) for k, v in shared_model['sections'].items()}
    sections['INFER'].update(num_reader_threads=12, batch_size=1)
    config = write_config(tmp_path / 'tiny.yaml', sections)
    weights = shared_model['weights']
    folder = tmp_path / 'videos'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        write_h264(folder / f'h{i}.mp4', frames=30 + 5 * i)
        write_video(folder / f'a{i}.avi', rng.integers(0, 256, (12, 48, 64, 3), np.uint8))
    return {'dir': tmp_path, 'config': config, 'weights': weights, 'folder': folder}


PLAN = re.compile(r'decoding and the engine: (\d+) workers, engine (\d+) thread\(s\), decoder '
                  r'(\d+) thread\(s\)')


def predict(setup, name, *args):
    out = setup['dir'] / name
    res = run_cli('predict.py', '--config', setup['config'], '--weights', setup['weights'],
                  '--save_dir', str(out), '--infer_topk', '3', *args)
    assert res.returncode == 0, res.stderr[-3000:]
    plan = tuple(int(g) for g in PLAN.search(res.stdout).groups())
    return json.loads((out / 'predict_results.json').read_text()), plan


def test_folder_with_workers_gives_the_records_without(setup):
    folder = str(setup['folder'])
    with_workers, plan = predict(setup, 'w', '--video_path', folder)
    assert plan == (min(4, available_cpus()), available_cpus(), 1)  # the default, 4 videos
    without, plan = predict(setup, 'n', '--video_path', folder, '--num_reader_threads', '0',
                            '--cpu_threads', '1')
    assert plan == (0, 1, 2)  # explicit values win
    assert len(with_workers) == 4 and with_workers == without
    one, plan = predict(setup, 'o', '--video_path', str(setup['folder'] / 'h1.mp4'),
                        '--cpu_threads', '1')
    assert plan == (0, 1, 2)
    assert one == [r for r in without if r['path'].endswith('h1.mp4')]
