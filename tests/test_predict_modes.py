"""predict.py modes: a folder of videos, CSV output, windows along a long video with
timestamps, online TSM (equal to the offline backward-shift model), camera errors."""
import csv
import json

import numpy as np
import paddle
import pytest

from models.online import OnlineTSM
from models.tsm import TSM
from reader import open_video
from testing.media import make_clip, write_mp4, write_video
from tests.conftest import run_cli
from jobs.predict_output import clock
from reader.inputs import find_videos


@pytest.fixture
def setup(tmp_path, shared_model):
    """The session's tiny config and weights (exported once: conftest.shared_model), and a
    folder of the test's own for its videos (10 fps, 48x64) and outputs."""
    return {'dir': tmp_path, 'config': shared_model['config'],
            'weights': shared_model['weights']}


def predict(setup, *args):
    res = run_cli('predict.py', '--config', setup['config'], '--weights', setup['weights'],
                  *args)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_find_videos_recursively(tmp_path):
    clip = make_clip(3, 16, 16)
    (tmp_path / 'b' / 'c').mkdir(parents=True)
    want = [write_video(tmp_path / 'a.avi', clip),
            write_video(tmp_path / 'b' / 'c' / 'x.MKV', clip),
            write_mp4(tmp_path / 'b' / 'y.mp4', clip)]
    (tmp_path / 'b' / 'notes.txt').write_text('not a video')
    assert find_videos(str(tmp_path)) == sorted(want)
    with pytest.raises(FileNotFoundError, match=r'no videos \(\*\.mp4'):
        find_videos(str(tmp_path / 'b' / 'c' / 'none'))


def test_fps_of_the_backends(tmp_path):
    path = write_mp4(tmp_path / 'v.mp4', make_clip(5, 16, 16), fps=10)
    video = open_video(path, 'mp4')
    assert video.fps == pytest.approx(10) and video.num_frames == 5
    from reader.video_backends import OpenCVVideo
    assert OpenCVVideo(path).fps == pytest.approx(10)


def test_clock():
    assert [clock(t) for t in (0, 7, 62, 3723, 2.5)] == ['00:00', '00:07', '01:02', '1:02:03',
                                                         '00:02.5']


def test_predict_folder_writes_json_and_csv(setup):
    folder = setup['dir'] / 'videos'
    (folder / 'sub').mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = [write_video(folder / 'one.avi', rng.integers(0, 256, (12, 48, 64, 3), np.uint8)),
             write_mp4(folder / 'sub' / 'two.mp4', rng.integers(0, 256, (12, 48, 64, 3), np.uint8))]
    out = setup['dir'] / 'pr'
    res = predict(setup, '--video_path', str(folder), '--save_dir', str(out), '--infer_topk', '2',
                  '-o', 'INFER.num_crops=3')
    records = json.loads((out / 'predict_results.json').read_text())
    assert [r['path'] for r in records] == sorted(paths)
    rows = read_csv(out / 'predict_results.csv')
    assert list(rows[0]) == ['path', 'rank', 'class_index', 'class_name', 'probability']
    assert len(rows) == 4
    for r, row in zip([r for r in records for _ in range(2)], rows):
        k = int(row['rank']) - 1
        assert row['path'] == r['path'] and int(row['class_index']) == r['top_indices'][k]
        assert row['class_name'] == r['top_names'][k] in ('red', 'green', 'blue')
        assert float(row['probability']) == pytest.approx(r['top_probs'][k], abs=1e-6)
    assert f"{paths[0]}:\n    {records[0]['top_names'][0]}: " in res.stdout


def test_predict_windows_along_a_long_video(setup):
    # 45 frames at 10 fps = 4.5 s; 2 s windows: [0, 2) and [2, 4.5) (0.5 s left is absorbed)
    rng = np.random.default_rng(1)
    path = write_video(setup['dir'] / 'long.avi', rng.integers(0, 256, (45, 48, 64, 3), np.uint8),
                       fps=10)
    out = setup['dir'] / 'pw'
    res = predict(setup, '--video_path', path, '--window_seconds', '2', '--save_dir', str(out),
                  '--infer_topk', '3')
    records = json.loads((out / 'predict_results.json').read_text())
    assert [(r['start'], r['end']) for r in records] == [(0, 2), (2, 4.5)]
    lines = res.stdout.splitlines()
    at = lines.index(f"{path}:")
    for line, r in zip(lines[at + 1:at + 3], records):
        assert line == (f"    {clock(r['start'])}-{clock(r['end'])}  {r['top_names'][0]} "
                        f"{r['top_probs'][0]:.2f}")
    assert lines[at + 1].startswith('    00:00-00:02  ') and lines[at + 2].startswith(
        '    00:02-00:04.5  ')
    rows = read_csv(out / 'predict_results.csv')
    assert list(rows[0])[:3] == ['path', 'start_s', 'end_s'] and len(rows) == 6
    assert [(float(r['start_s']), float(r['end_s'])) for r in rows[::3]] == [(0, 2), (2, 4.5)]


def test_online_equals_offline_backward_shift():
    """At every frame t the online model's logits equal those of the offline TSM with the
    backward-only shift run on frames 0..t (window 0), and a window of k frames equals the
    head over the last k of those offline per-frame features."""
    n = 5
    frames = np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype('float32')
    kw = dict(num_classes=3, num_layers=18, shift_direction='backward')
    paddle.seed(3)
    offline = [TSM(seg_num=t + 1, **kw) for t in range(n)]  # offline[t]: frames 0..t
    for m in offline[1:]:
        m.set_state_dict(offline[0].state_dict())
    for m in offline:
        m.eval()
    with paddle.no_grad():
        for head in ('feature_mean', 'logit_mean'):
            for m in offline:
                m.set_options(head=head)
            twin = TSM(seg_num=8, head=head, **kw)
            twin.set_state_dict(offline[0].state_dict())
            online = OnlineTSM(twin, window=0)
            for t in range(n):
                got = online.step(frames[t:t + 1])
                want = offline[t](paddle.to_tensor(frames[None, :t + 1])).numpy()
                assert np.abs(got - want).max() < 1e-5, (head, t)
        # the shift does something: the bi-directional model differs
        offline[-1].set_options(shift_direction='paddle')
        assert np.abs(offline[-1](paddle.to_tensor(frames[None])).numpy() - want).max() > 1e-3
        offline[-1].set_options(shift_direction='backward')

        online.window = 2  # head logit_mean; the last 2 frames
        online.reset()
        for t in range(n):
            got = online.step(frames[t:t + 1])
            m = offline[t]
            feats = m.dropout(m.avgpool(m.backbone(paddle.to_tensor(frames[:t + 1]))).flatten(1))
            want = m.fc(feats[-2:]).mean(axis=0, keepdim=True).numpy()
            assert np.abs(got - want).max() < 1e-5, t


def test_online_refuses_mit_direction_and_seglen():
    with pytest.raises(ValueError, match="shift_direction 'paddle' or 'backward'"):
        OnlineTSM(TSM(num_classes=3, num_layers=18, shift_direction='mit'))
    with pytest.raises(ValueError, match='seglen must be 1'):
        OnlineTSM(TSM(num_classes=3, num_layers=18, seglen=2))


def test_predict_online_cli_and_camera_error(setup):
    rng = np.random.default_rng(2)
    path = write_video(setup['dir'] / 's.avi', rng.integers(0, 256, (9, 48, 64, 3), np.uint8),
                       fps=10)
    out = setup['dir'] / 'po'
    res = predict(setup, '--video_path', path, '--online', '--online_window', '3',
                  '--save_dir', str(out))
    data = json.loads((out / 'online_results.json').read_text())
    assert [f['frame'] for f in data['frames']] == list(range(9))
    assert [f['time'] for f in data['frames']] == pytest.approx([i / 10 for i in range(9)])
    changes = data['changes']
    assert changes[0]['frame'] == 0 and all(
        a['class_index'] != b['class_index'] for a, b in zip(changes, changes[1:]))
    printed = [ln for ln in res.stdout.splitlines() if ' frame ' in ln and ln[0] != '[']
    assert printed == [f"{clock(c['time'])}  frame {c['frame']}: {c['class_name']} "
                       f"{c['probability']:.2f}" for c in changes]
    assert len(read_csv(out / 'online_results.csv')) == 9

    cam = run_cli('predict.py', '--config', setup['config'], '--weights', setup['weights'],
                  '--online', '--camera', '97', '--save_dir', str(setup['dir'] / 'cam'))
    assert cam.returncode != 0 and 'Traceback' not in cam.stderr
    assert cam.stderr.strip().splitlines()[-1] == \
        'error: cannot open camera 97 (no such device here?)'
