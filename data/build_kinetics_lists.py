"""Build Kinetics-400 list files (`path label` per line) from a downloaded dataset.

Two layouts are understood:
  folders:  ROOT/<split>/<class name>/<video>.mp4    (what most downloaders write)
  csv:      ROOT/<split>/<youtube_id>_<start:06d>_<end:06d>.mp4 with the official
            annotation CSV (label,youtube_id,time_start,time_end,split) given by --csv
Class names are matched to data/kinetics400_label_list.txt whatever their spelling
of spaces/underscores/quotes/parentheses.  Videos whose class is unknown are counted
and reported, not listed.

    python -m data.build_kinetics_lists --root /data/kinetics400 --split train \
        --out data/dataset/kinetics/train.list
"""
import argparse
import csv
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VIDEO_EXTS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.flv', '.m4v')


def normalize(name):
    """'air drumming', 'air_drumming', '"air drumming"' -> 'air_drumming'."""
    return re.sub(r'[^a-z0-9]+', '_', name.strip().strip('"').lower()).strip('_')


def read_label_list(path):
    """'idx name' or 'name' per line -> {normalized name: index}."""
    labels = {}
    with open(path, encoding='utf-8') as f:
        for i, line in enumerate(ln.strip() for ln in f):
            if not line:
                continue
            parts = line.split(None, 1)
            name = parts[1] if len(parts) == 2 and parts[0].isdigit() else line
            labels[normalize(name)] = len(labels)
    return labels


def from_folders(split_dir, labels):
    items, unknown = [], {}
    for cls in sorted(os.listdir(split_dir)):
        folder = os.path.join(split_dir, cls)
        if not os.path.isdir(folder):
            continue
        idx = labels.get(normalize(cls))
        for root, _, files in os.walk(folder):
            for f in sorted(files):
                if f.lower().endswith(VIDEO_EXTS):
                    if idx is None:
                        unknown[cls] = unknown.get(cls, 0) + 1
                    else:
                        items.append((os.path.join(root, f), idx))
    return items, unknown


def from_csv(split_dir, csv_path, labels):
    """Match files named <youtube_id>_<start>_<end>.<ext> to the annotation rows."""
    present = {}
    for root, _, files in os.walk(split_dir):
        for f in files:
            if f.lower().endswith(VIDEO_EXTS):
                present[os.path.splitext(f)[0]] = os.path.join(root, f)
    items, unknown, missing = [], {}, 0
    with open(csv_path, encoding='utf-8', newline='') as f:
        for row in csv.DictReader(f):
            key = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_" \
                  f"{int(float(row['time_end'])):06d}"
            if key not in present:
                missing += 1
                continue
            idx = labels.get(normalize(row['label']))
            if idx is None:
                unknown[row['label']] = unknown.get(row['label'], 0) + 1
            else:
                items.append((present[key], idx))
    return items, unknown, missing


def write_list(items, out):
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w', encoding='utf-8') as f:
        for path, idx in items:
            f.write(f"{path} {idx}\n")


def write_split_lists(lists, out_dir, name, split, missing):
    """lists {'train': items, 'val': items} -> <out_dir>/<name>_<kind>_split_<split>.list;
    -> {'train': n, 'val': n, 'missing': n, 'missing_examples': the first five}."""
    result = {}
    for kind, items in lists.items():
        write_list(items, os.path.join(out_dir, f'{name}_{kind}_split_{split}.list'))
        result[kind] = len(items)
    return {**result, 'missing': len(missing), 'missing_examples': missing[:5]}


def split_lists_main(argv, doc, build, root_help, splits_help, out_dir, labels):
    """The command line of the official-split list builders (UCF101, HMDB51): build(root,
    splits, split, out_dir, labels) -> {'train', 'val', 'missing', 'missing_examples'}."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', required=True, help=root_help)
    p.add_argument('--splits', required=True, help=splits_help)
    p.add_argument('--split', type=int, default=1, choices=(1, 2, 3))
    p.add_argument('--out_dir', default=out_dir)
    p.add_argument('--labels', default=labels)
    args = p.parse_args(argv)
    try:
        r = build(args.root, args.splits, args.split, args.out_dir, args.labels)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"split {args.split}: {r['train']} train and {r['val']} test videos listed in "
          f"{args.out_dir}")
    if r['missing']:
        print(f"{r['missing']} videos of the split files are not under {args.root}, e.g. "
              f"{', '.join(r['missing_examples'])}")
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', required=True, help='dataset folder holding the split folders')
    p.add_argument('--split', default='train', help='split folder name (train, val, ...)')
    p.add_argument('--out', required=True, help='list file to write')
    p.add_argument('--csv', default=None, help='official annotation CSV (csv layout)')
    p.add_argument('--labels', default=os.path.join(HERE, 'kinetics400_label_list.txt'))
    args = p.parse_args(argv)
    split_dir = os.path.join(args.root, args.split)
    if not os.path.isdir(split_dir):
        sys.exit(f"error: {split_dir} is not a folder")
    labels = read_label_list(args.labels)
    missing = 0
    if args.csv:
        items, unknown, missing = from_csv(split_dir, args.csv, labels)
    else:
        items, unknown = from_folders(split_dir, labels)
    write_list(items, args.out)
    print(f"wrote {len(items)} videos to {args.out}")
    if unknown:
        print(f"skipped {sum(unknown.values())} videos of {len(unknown)} unknown classes: "
              f"{', '.join(sorted(unknown)[:10])}")
    if missing:
        print(f"{missing} annotated videos are not on disk (deleted from YouTube, or not downloaded)")
    return items


if __name__ == '__main__':
    main()
