"""List building and pkl conversion on small generated folder trees."""
import csv

import numpy as np

from data import build_kinetics_lists, video2pkl
from reader.video_backends import open_video
from testing.media import write_video


def test_lists_from_class_folders(tmp_path):
    for cls, n in (('abseiling', 2), ('air drumming', 1), ('"passing American football (in game)"', 1),
                   ('not a kinetics class', 1)):
        d = tmp_path / 'train' / cls
        d.mkdir(parents=True)
        for i in range(n):
            (d / f'v{i}.mp4').write_bytes(b'x')
    (tmp_path / 'train' / 'abseiling' / 'notes.txt').write_text('ignored')
    items = build_kinetics_lists.main(['--root', str(tmp_path), '--split', 'train',
                                       '--out', str(tmp_path / 'train.list')])
    labels = sorted(idx for _, idx in items)
    assert labels == [0, 0, 1, 208]  # lines 1, 2 and 209 of data/kinetics400_label_list.txt
    lines = (tmp_path / 'train.list').read_text().splitlines()
    assert len(lines) == 4 and all(ln.rsplit(' ', 1)[1].isdigit() for ln in lines)


def test_lists_from_annotation_csv(tmp_path):
    (tmp_path / 'val').mkdir()
    (tmp_path / 'val' / 'abc_000010_000020.mp4').write_bytes(b'x')
    with open(tmp_path / 'val.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['label', 'youtube_id', 'time_start', 'time_end', 'split'])
        w.writerow(['zumba', 'abc', '10', '20', 'val'])
        w.writerow(['yoga', 'gone', '0', '10', 'val'])  # not on disk
    items = build_kinetics_lists.main(['--root', str(tmp_path), '--split', 'val', '--csv',
                                       str(tmp_path / 'val.csv'), '--out', str(tmp_path / 'v.list')])
    assert items == [(str(tmp_path / 'val' / 'abc_000010_000020.mp4'), 399)]


def test_video2pkl_round_trip(tmp_path):
    yy, xx = np.mgrid[0:48, 0:64]
    clip = np.stack([np.stack([(xx * 4 + 20 * t) % 256, yy * 5, (xx + yy) * 2], -1)
                     for t in range(6)]).astype(np.uint8)  # smooth: JPEG keeps it close
    video = write_video(tmp_path / 'a.avi', clip)
    (tmp_path / 'in.list').write_text(f"{video} 3\n{tmp_path / 'missing.avi'} 1\n")
    done, failed = video2pkl.main(['--list', str(tmp_path / 'in.list'), '--out_dir',
                                   str(tmp_path / 'pkl'), '--out_list', str(tmp_path / 'p.list'),
                                   '--quality', '100'])
    assert len(done) == 1 and len(failed) == 1
    pkl = open_video(done[0][0], 'pkl')
    assert pkl.num_frames == 6 and pkl.label == 3
    frames = pkl.get_frames([0, 5]).astype(int)
    assert np.abs(frames - clip[[0, 5]]).mean() < 3
    assert (tmp_path / 'p.list').read_text() == f"{done[0][0]} 3\n"
