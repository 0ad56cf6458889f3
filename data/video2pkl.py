"""Convert videos to the original's pkl format: (video_id, label, [JPEG bytes per frame]),
and write the pkl list file.  Reading pkl is several times faster than decoding mp4
during training, at the cost of disk space.

Pickle protocol 4 by default: the original wrote protocol 2 (Python 2's), which spells
every frame's bytes as latin-1 text; Python 3 reads that far slower, slower than the 8
JPEG decodes a clip needs (docs/training.md#reading-videos).  The reader reads both;
--protocol 2 writes files the Python 2 original can read.

    python -m data.video2pkl --list data/dataset/kinetics/train.list \
        --out_dir data/dataset/kinetics/train_pkl --out_list data/dataset/kinetics/train_pkl.list
"""
import argparse
import os
import pickle
import sys

import cv2


from reader.kinetics_reader import parse_list


def video_to_jpegs(path, quality=90, short_size=None):
    """Every decodable frame as JPEG bytes (RGB order preserved by the JPEG codec)."""
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if short_size:
            h, w = frame.shape[:2]
            s = short_size / min(h, w)
            frame = cv2.resize(frame, (int(round(w * s)), int(round(h * s))),
                               interpolation=cv2.INTER_AREA)
        frames.append(cv2.imencode('.jpg', frame, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    cap.release()
    return frames


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--list', required=True, help='mp4 list file (path label)')
    p.add_argument('--out_dir', required=True)
    p.add_argument('--out_list', required=True, help='pkl list file to write')
    p.add_argument('--quality', type=int, default=90, help='JPEG quality')
    p.add_argument('--short_size', type=int, default=0, help='resize short side first (0: keep)')
    p.add_argument('--protocol', type=int, choices=(2, 4, 5), default=4,
                   help='pickle protocol (2: what the Python 2 original wrote; slow to read)')
    args = p.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    done, failed = [], []
    for path, label, _ in parse_list(args.list, 'mp4'):
        vid = os.path.splitext(os.path.basename(path))[0]
        frames = video_to_jpegs(path, args.quality, args.short_size or None)
        if not frames:
            failed.append(path)
            print(f"warning: {path}: no frame decodes, skipped", file=sys.stderr)
            continue
        out = os.path.join(args.out_dir, vid + '.pkl')
        tmp = out + '.tmp'
        with open(tmp, 'wb') as f:
            pickle.dump((vid, label, frames), f, protocol=args.protocol)
        os.replace(tmp, out)
        done.append((out, label))
    with open(args.out_list, 'w', encoding='utf-8') as f:
        f.writelines(f"{out} {label}\n" for out, label in done)
    print(f"converted {len(done)} videos into {args.out_dir}; {len(failed)} failed")
    return done, failed


if __name__ == '__main__':
    main()
