"""Reader: sampled indices and crop boxes against hand-computed values, exact frames from
generated lossless videos, every source format, list parsing, and counted failures."""
import pickle
import time

import cv2
import numpy as np
import paddle
import pytest

from reader import clip_shape, collate, get_reader, parse_list
from reader.kinetics_reader import ListFileError
from reader.sampling import segment_indices, uniform_clip_indices
from reader.transforms import (center_crop_box, fixed_offsets, multi_scale_crop_box,
                               normalize, random_flip, scale_size)
from reader.video_backends import DecordVideo, OpenCVVideo, VideoDecodeError, open_video
from testing.media import make_clip, write_mp4, write_video
from testing.tiny import TINY, tiny_sections, write_config
from utils.config_utils import parse_config


# ---- sampling (REFERENCE section 5), values worked out by hand ----

@pytest.mark.parametrize('n,seg,seglen,expected', [
    (20, 4, 1, [2, 7, 12, 17]),            # average_dur 5: (5-1)//2 + 5i
    (20, 4, 2, [2, 3, 7, 8, 12, 13, 17, 18]),
    (8, 8, 1, [0, 1, 2, 3, 4, 5, 6, 7]),    # average_dur 1: (1-1)//2 + i
    (6, 4, 2, [0, 1, 1, 2, 2, 3, 3, 4]),    # average_dur 1 < seglen: i*1, then +j
    (3, 4, 1, [0, 1, 2, 0]),                # average_dur 0: i, modulo 3
    (1, 8, 1, [0] * 8),                     # a single frame
    (250, 8, 1, [15, 46, 77, 108, 139, 170, 201, 232]),  # 31: 15 + 31i
])
def test_eval_indices(n, seg, seglen, expected):
    for mode in ('valid', 'test', 'infer'):
        assert segment_indices(n, seg, seglen, mode) == expected


@pytest.mark.parametrize('n,seg,seglen,expected', [
    (20, 4, 1, [2, 7, 12, 17]),                     # (5-1)//2 = 2, as mp4
    (20, 4, 2, [1, 2, 6, 7, 11, 12, 16, 17]),       # (5-2)//2 = 1 (mp4: 2)
    (24, 4, 3, [1, 2, 3, 7, 8, 9, 13, 14, 15, 19, 20, 21]),  # (6-3)//2 = 1 (mp4: 2)
    (25, 4, 2, [2, 3, 8, 9, 14, 15, 20, 21]),       # (6-2)//2 = 2 (mp4: 2 too)
    (6, 4, 2, [0, 1, 1, 2, 2, 3, 3, 4]),            # average_dur 1 < seglen: i*1, as mp4
])
def test_pkl_eval_indices_centre_the_window(n, seg, seglen, expected):
    """The original's pkl branch: `(average_dur - seglen) // 2 + i * average_dur`."""
    for mode in ('valid', 'test', 'infer'):
        assert segment_indices(n, seg, seglen, mode, centre_window=True) == expected
    assert uniform_clip_indices(n, seg, seglen, 1, centre_window=True) == [expected]


def test_pkl_clips_centre_the_window_on_each_clip_point():
    """40 frames, 4 segments of 10, seglen 2, 2 clips: clip points 2.5 and 7.5 of each
    segment, windows starting at 1.5 -> 1 and 6.5 -> 6 (mp4: (10-1)//4 = 2, (30-1)//4 = 7)."""
    clips = uniform_clip_indices(40, 4, 2, 2, centre_window=True)
    assert clips == [[1, 2, 11, 12, 21, 22, 31, 32], [6, 7, 16, 17, 26, 27, 36, 37]]
    assert uniform_clip_indices(40, 4, 2, 2) == [[2, 3, 12, 13, 22, 23, 32, 33],
                                                  [7, 8, 17, 18, 27, 28, 37, 38]]


@pytest.mark.parametrize('fmt,expected', [('pkl', [1, 2, 6, 7, 11, 12, 16, 17]),
                                          ('mp4', [2, 3, 7, 8, 12, 13, 17, 18])])
def test_reader_offset_follows_the_format(tmp_path, fmt, expected):
    """seglen 2, 20 frames, 4 segments: the reader takes the format's test-mode offset."""
    clip = make_clip(20)
    if fmt == 'pkl':
        path = tmp_path / 'v.pkl'
        with open(path, 'wb') as f:
            pickle.dump(('vid', 1, [_png(fr) for fr in clip]), f, protocol=2)
        line = f"{path}\n"
    else:
        line = f"{write_video(tmp_path / 'v.avi', clip)} 1\n"
    (tmp_path / 'v.list').write_text(line)
    sections = tiny_sections()
    sections['MODEL'].update(format=fmt, seglen=2)
    cfg = parse_config(write_config(tmp_path / 'c.yaml', sections))
    ds = get_reader('TSM', 'valid', cfg, filelist=str(tmp_path / 'v.list'))
    frames, _ = ds.load_frames(0, None)
    np.testing.assert_array_equal(frames, clip[expected])


def test_clip_shape_of_a_section(tmp_path):
    """seg_num 4, seglen 2, TEST at 32 px with 2 clips x 3 crops: the model takes [4, 6, 32,
    32], a reader item holds the 6 views, the online model one frame; training one view."""
    sections = tiny_sections()
    sections['MODEL']['seglen'] = 2
    sections['TEST'].update(num_clips=2, num_crops=3)
    cfg = parse_config(write_config(tmp_path / 'c.yaml', sections))
    assert clip_shape(cfg, 'TEST') == [4, 6, 32, 32]
    assert clip_shape(cfg, 'TEST', views=True) == [6, 4, 6, 32, 32]
    assert clip_shape(cfg, 'VALID', views=True) == [4, 6, 32, 32]  # one view: no V axis
    assert clip_shape(cfg, 'INFER', online=True) == [3, 32, 32]
    train = get_reader('TSM', 'train', cfg, items=[])
    assert train.clip_shape == [4, 6, 32, 32] and train.num_views == 1


def test_train_indices_stay_in_their_segment_and_cover_it():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        idx = segment_indices(20, 4, 1, 'train', rng)
        for i, v in enumerate(idx):
            assert 5 * i <= v <= 5 * i + 4  # randint(0, average_dur - seglen) + 5i
        seen.add(idx[0])
    assert seen == {0, 1, 2, 3, 4}
    assert segment_indices(3, 4, 1, 'train', rng) == [0, 1, 2, 0]


# ---- transforms ----

@pytest.mark.parametrize('h,w,keep,expected', [
    (240, 320, False, (256, 341)),   # forced 4:3, short side 256
    (320, 240, False, (341, 256)),
    (360, 640, False, (256, 341)),   # 16:9 squeezed to 4:3, as the original did
    (256, 455, False, (256, 455)),   # short side already 256: untouched
    (360, 640, True, (256, 455)),    # keep_ratio: 640 * 256/360 = 455.1
    (640, 360, True, (455, 256)),
])
def test_scale_size(h, w, keep, expected):
    assert scale_size(h, w, 256, keep) == expected


def test_crop_boxes():
    assert center_crop_box(341, 256, 224) == (58, 16, 224, 224)  # round(58.5) = 58, 16
    assert center_crop_box(256, 341, 224) == (16, 58, 224, 224)
    assert fixed_offsets(256, 256, 224, 224) == [
        (0, 0), (32, 0), (0, 32), (32, 32), (16, 16), (0, 16), (32, 16), (16, 32), (16, 0),
        (8, 8), (24, 8), (8, 24), (24, 24)]
    # no room vertically (h_step 0): lower-left and lower-right drop out
    assert fixed_offsets(300, 200, 200, 200) == [
        (0, 0), (100, 0), (50, 0), (0, 0), (100, 0), (50, 0), (50, 0), (25, 0), (75, 0),
        (25, 0), (75, 0)]


def test_multi_scale_crop_draws_the_ten_scale_pairs():
    rng = np.random.default_rng(0)
    sizes = [256, 224, 192, 168]  # int(256 * s) for s in 1, .875, .75, .66
    allowed = {(sizes[j], sizes[i]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    seen = set()
    for _ in range(2000):
        x, y, w, h = multi_scale_crop_box(256, 256, 256, rng)
        assert (w, h) in allowed and 0 <= x <= 256 - w and 0 <= y <= 256 - h
        assert (x, y) in fixed_offsets(256, 256, w, h)  # float offsets; PIL rounds the box
        seen.add((w, h))
    assert seen == allowed and len(allowed) == 10


def test_normalize_layout_and_values():
    frames = np.stack([np.full((2, 3, 3), [10 * t, 100, 200], np.uint8) for t in range(4)])
    out = normalize(frames, [0.5, 0.5, 0.5], [0.25, 0.5, 1.0], seg_num=2, seglen=2)
    assert out.shape == (2, 6, 2, 3) and out.dtype == np.float32
    # segment 1 holds frames 2, 3; channel 3 of it is frame 3's red channel
    assert out[1, 3, 0, 0] == pytest.approx((30 / 255 - 0.5) / 0.25)
    assert out[0, 2, 1, 2] == pytest.approx((200 / 255 - 0.5) / 1.0)


def test_flip_is_shared_by_all_frames():
    frames = make_clip(3, 8, 10)
    flips = {bool(np.array_equal(random_flip(frames, np.random.default_rng(s))[:, :, 0],
                                 frames[:, :, -1])) for s in range(20)}
    assert flips == {True, False}
    f = random_flip(frames, np.random.default_rng(1))
    assert all(np.array_equal(f[t], frames[t, :, ::-1]) for t in range(3)) or np.array_equal(f, frames)


# ---- decoding: exact frames from lossless files ----

@pytest.fixture
def lossless(tmp_path):
    clip = make_clip(20)
    return clip, write_video(tmp_path / 'clip.avi', clip)


@pytest.mark.parametrize('backend', [DecordVideo, OpenCVVideo])
def test_backends_decode_exact_frames(lossless, backend):
    clip, path = lossless
    video = backend(path)
    assert video.num_frames == 20
    idx = [2, 7, 7, 12, 19, 0]
    np.testing.assert_array_equal(video.get_frames(idx), clip[idx])


def test_reader_returns_the_hand_computed_frames(tmp_path, lossless):
    clip, path = lossless
    (tmp_path / 'v.list').write_text(f"{path} 1\n")
    sections = tiny_sections()
    sections['TEST'].update(short_size=48, target_size=48)  # 48x64 frames: no resize
    cfg = parse_config(write_config(tmp_path / 'c.yaml', sections))
    imgs, label = get_reader('TSM', 'test', cfg, filelist=str(tmp_path / 'v.list'))[0][:2]
    assert imgs.shape == (4, 3, 48, 48) and imgs.dtype == np.float32 and label == 1
    mean = np.array(cfg.MODEL.image_mean, np.float32)
    std = np.array(cfg.MODEL.image_std, np.float32)
    for seg, frame_idx in enumerate([2, 7, 12, 17]):
        expected = clip[frame_idx][:, 8:56]  # centre crop: x from round((64-48)/2) = 8
        got = (imgs[seg].transpose(1, 2, 0) * std + mean) * 255
        np.testing.assert_allclose(got, expected, atol=1e-3)


def test_mp4_decodes_exactly(tmp_path):
    clip = make_clip(12)
    video = open_video(write_mp4(tmp_path / 'v.mp4', clip))
    assert video.num_frames == 12
    np.testing.assert_array_equal(video.get_frames([1, 6, 11]), clip[[1, 6, 11]])


def test_header_frame_count_larger_than_what_decodes(tmp_path):
    path = write_mp4(tmp_path / 'full.mp4', make_clip(20))
    data = open(path, 'rb').read()
    cut = tmp_path / 'cut.mp4'
    cut.write_bytes(data[:int(len(data) * 0.6)])  # a truncated download; header says 20
    (tmp_path / 'v.list').write_text(f"{cut} 0\n")
    cfg = parse_config(write_config(tmp_path / 'c.yaml', TINY))
    ds = get_reader('TSM', 'test', cfg, filelist=str(tmp_path / 'v.list'))
    frames, _ = ds.load_frames(0, None)
    real = OpenCVVideo(str(cut)).num_frames  # what really decodes
    assert 0 < real < 20
    expected = segment_indices(real, 4, 1, 'test')
    np.testing.assert_array_equal(frames, make_clip(20)[expected])


def test_rgb_grayscale_and_tiny_frames(tmp_path):
    gray = np.repeat(make_clip(6, 16, 16)[..., :1], 3, axis=3)  # 16x16 grayscale content
    path = write_video(tmp_path / 'g.avi', gray)
    got = open_video(path).get_frames([0, 5])
    assert got.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(got, gray[[0, 5]])


def _png(frame):
    return cv2.imencode('.png', cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()


def test_pkl_format(tmp_path):
    clip = make_clip(9)
    path = tmp_path / 'v.pkl'
    with open(path, 'wb') as f:  # the original: (video_id, label, [encoded frames]), protocol 2
        pickle.dump(('vid', 2, [_png(fr) for fr in clip]), f, protocol=2)
    video = open_video(str(path), 'pkl')
    assert video.num_frames == 9 and video.label == 2
    np.testing.assert_array_equal(video.get_frames([1, 4, 4]), clip[[1, 4, 4]])
    (tmp_path / 'p.list').write_text(f"{path}\n")
    sections = tiny_sections()
    sections['MODEL']['format'] = 'pkl'
    cfg = parse_config(write_config(tmp_path / 'c.yaml', sections))
    label = get_reader('TSM', 'valid', cfg, filelist=str(tmp_path / 'p.list'))[0][1]
    assert label == 2  # taken from inside the pickle


def test_frame_folder_format(tmp_path):
    clip = make_clip(5)
    folder = tmp_path / 'vid one'
    folder.mkdir()
    for i, fr in enumerate(clip):
        (folder / f'img_{i + 1:05d}.jpg').write_bytes(_png(fr))  # decoders sniff the format
    video = open_video(str(folder), 'frames', 5)
    np.testing.assert_array_equal(video.get_frames([0, 4]), clip[[0, 4]])
    (tmp_path / 'f.list').write_text(f"{folder} 5 1\n")
    items = parse_list(str(tmp_path / 'f.list'), 'frames', 3)
    assert items == [(str(folder), 1, 5)]
    with pytest.raises(VideoDecodeError, match='img_00007.jpg'):
        video.get_frames([6])


# ---- list files ----

def test_list_parsing_edge_cases(tmp_path):
    (tmp_path / 'a b.mp4').write_bytes(b'')
    text = "# comment\r\n\r\n/x/with space/v 1.mp4 2\r\n  rel.mp4   0  \r\n\na b.mp4 1\r\n"
    (tmp_path / 'l.list').write_bytes(text.encode())
    items = parse_list(str(tmp_path / 'l.list'), 'mp4', 3)
    assert items == [('/x/with space/v 1.mp4', 2, None), ('rel.mp4', 0, None),
                     (str(tmp_path / 'a b.mp4'), 1, None)]  # relative to the list's folder


@pytest.mark.parametrize('line,match', [
    ('video.mp4', r'l.list:2: no label'),
    ('video.mp4 abc', r"l.list:2: label 'abc' is not an integer"),
    ('video.mp4 3', r'l.list:2: label 3 outside \[0, 3\)'),
    ('video.mp4 -1', r'l.list:2: label -1 outside'),
])
def test_bad_list_lines_name_file_and_line(tmp_path, line, match):
    (tmp_path / 'l.list').write_text(f"ok.mp4 0\n{line}\n")
    with pytest.raises(ListFileError, match=match):
        parse_list(str(tmp_path / 'l.list'), 'mp4', 3)


def test_missing_list_and_infer_lists_without_labels(tmp_path):
    with pytest.raises(ListFileError, match='list file not found'):
        parse_list(str(tmp_path / 'none.list'), 'mp4', 3)
    (tmp_path / 'i.list').write_text("a.mp4\nb c.mp4 1\n")
    assert parse_list(str(tmp_path / 'i.list'), 'mp4', 3, need_label=False) == [
        ('a.mp4', -1, None), ('b c.mp4', 1, None)]


# ---- failures are counted, not dropped silently ----

def test_failed_videos_are_counted_through_dataloader_workers(tmp_path, lossless):
    _, good = lossless
    (tmp_path / 'empty.mp4').write_bytes(b'')
    (tmp_path / 'text.mp4').write_text('not a video')
    lines = [f"{good} 0", f"{tmp_path / 'empty.mp4'} 1", f"{tmp_path / 'text.mp4'} 2",
             f"{tmp_path / 'missing.mp4'} 1", f"{good} 2"]
    (tmp_path / 'v.list').write_text('\n'.join(lines))
    cfg = parse_config(write_config(tmp_path / 'c.yaml', TINY))
    ds = get_reader('TSM', 'valid', cfg, filelist=str(tmp_path / 'v.list'))
    loader = paddle.io.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert sum(int(b['failed']) for b in batches) == 3
    assert sum(len(b['labels']) for b in batches if b['paths']) == 2
    assert [p for b in batches for p in b['paths']] == [good, good]
    assert any(not b['paths'] for b in batches)  # a batch where every video failed


# ---- read-ahead: the config's buf_size, shared out among workers ----

@pytest.mark.parametrize('buf, batch, workers, views, expected', [
    (1024, 1, 2, 1, 8),     # 512 batches each: capped at 8
    (1024, 16, 12, 1, 5),   # 1024 // 192
    (1024, 16, 12, 30, 2),  # 30 views per item: at least Paddle's default
    (0, 1, 2, 1, 2), (1024, 1, 0, 1, 2)])
def test_prefetch_batches(buf, batch, workers, views, expected):
    from training.loader import prefetch_batches
    assert prefetch_batches(buf, batch, workers, views) == expected


def test_loader_reads_ahead_from_buf_size_in_order(tmp_path, lossless):
    from training.loader import build_loader
    _, good = lossless
    lines = [f"{good} {i % 3}" for i in range(7)]
    (tmp_path / 'v.list').write_text('\n'.join(lines))
    from utils.env import available_cpus
    sections = tiny_sections()
    sections['VALID']['buf_size'] = 12
    cfg = parse_config(write_config(tmp_path / 'c.yaml', sections))
    ds = get_reader('TSM', 'valid', cfg, filelist=str(tmp_path / 'v.list'))
    loader = build_loader(ds, 1, 2)
    workers = min(2, available_cpus())
    assert loader.prefetch_factor == max(2, 12 // workers)  # 6 batches each with 2 workers
    assert [int(b['indices'][0]) for b in loader] == list(range(7))
    # 8 ranks share the buffer: 12 // 8 clips each is less than Paddle's default
    assert build_loader(ds, 1, 2, rank=0, world=8).prefetch_factor == 2


class CountingReads(paddle.io.Dataset):
    """The reader's items, each read appended to a file (workers are other processes)."""

    def __init__(self, dataset, log):
        self.dataset, self.log = dataset, str(log)
        self.buf_size = dataset.buf_size

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        with open(self.log, 'a', encoding='ascii') as f:
            f.write(f'{i}\n')
        return item


def test_workers_read_ahead_as_far_as_buf_size_allows(tmp_path, lossless):
    """buf_size 4, 2 workers, batch 1: 2 batches each ahead.  While the consumer holds
    the first batch, the workers read exactly 4 more videos, then wait."""
    from training.loader import build_loader
    from utils.env import available_cpus
    if available_cpus() < 2:
        pytest.skip('needs 2 cores for 2 workers')
    _, good = lossless
    (tmp_path / 'v.list').write_text('\n'.join(f"{good} {i % 3}" for i in range(12)))
    sections = tiny_sections()
    sections['VALID']['buf_size'] = 4
    cfg = parse_config(write_config(tmp_path / 'c.yaml', sections))
    log = tmp_path / 'reads.txt'
    ds = CountingReads(get_reader('TSM', 'valid', cfg, filelist=str(tmp_path / 'v.list')), log)
    loader = build_loader(ds, 1, 2)
    assert loader.prefetch_factor == 2
    it = iter(loader)
    reads = lambda: len(log.read_text().split()) if log.exists() else 0  # noqa: E731
    try:
        assert int(next(it)['indices'][0]) == 0
        deadline = time.time() + 30
        while reads() < 5 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # had they not stopped, more would be read by now
        assert reads() == 5  # the one consumed and 2 x 2 ahead, in order
        assert sorted(map(int, log.read_text().split())) == list(range(5))
        assert [int(b['indices'][0]) for b in it] == list(range(1, 12))
        assert reads() == 12
    finally:
        from training.loader import close_iterator
        close_iterator(it)
