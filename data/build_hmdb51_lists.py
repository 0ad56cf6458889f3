"""Build HMDB51 list files (`path label` per line) from the official split files.

    python -m data.build_hmdb51_lists --root /data/hmdb51 --splits /data/testTrainMulti_7030_splits \
        --split 1 --out_dir data/dataset/hmdb51

--root holds the unpacked videos, hmdb51/<class>/<video>.avi (each class's .rar of
hmdb51_org.rar unpacks to its folder); --splits the unpacked test_train_splits.rar: one
`<class>_test_split<N>.txt` per class and split, lines `<video>.avi <id>` with id 1 = train,
2 = test, 0 = in neither (70 / 30 / 30 videos per class).  Labels are the 51 class names in
alphabetical order, data/hmdb51_label_list.txt.  Writes hmdb51_train_split_N.list and
hmdb51_val_split_N.list; videos the split names but the disk lacks are counted and the
first few named.
"""
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))

from data.build_kinetics_lists import (normalize, read_label_list,
                                      split_lists_main, write_split_lists)

SPLIT_FILE = re.compile(r'^(?P<cls>.+)_test_split(?P<n>\d)\.txt$')


def build(root, splits, split, out_dir, labels_path=os.path.join(HERE, 'hmdb51_label_list.txt')):
    """-> {'train': n, 'val': n, 'missing': n, ...}; writes the two list files."""
    labels = read_label_list(labels_path)
    found = {}
    for f in sorted(os.listdir(splits)):
        m = SPLIT_FILE.match(f)
        if m and int(m['n']) == split:
            if normalize(m['cls']) not in labels:
                raise ValueError(f"{f}: unknown class '{m['cls']}'")
            found[m['cls']] = os.path.join(splits, f)
    if len(found) != len(labels):
        lacking = sorted(set(labels) - {normalize(c) for c in found})
        raise ValueError(f"{splits}: split {split} files for {len(found)} of {len(labels)} "
                         f"classes (none for {', '.join(lacking[:5])})")
    lists, missing = {'train': [], 'val': []}, []
    for cls, path in sorted(found.items(), key=lambda kv: labels[normalize(kv[0])]):
        label = labels[normalize(cls)]
        with open(path, encoding='utf-8') as fh:
            for n, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or parts[1] not in ('0', '1', '2'):
                    raise ValueError(f"{path}:{n}: expected '<video> 0|1|2', got {line.strip()!r}")
                if parts[1] == '0':
                    continue
                video = next((p for p in (os.path.join(root, cls, parts[0]),
                                          os.path.join(root, parts[0])) if os.path.isfile(p)),
                             None)
                if video is None:
                    missing.append(f"{cls}/{parts[0]}")
                else:
                    lists['train' if parts[1] == '1' else 'val'].append((video, label))
    return write_split_lists(lists, out_dir, 'hmdb51', split, missing)


def main(argv=None):
    return split_lists_main(argv, __doc__, build, 'folder of class folders of .avi',
                            'folder of <class>_test_split<N>.txt', 'data/dataset/hmdb51',
                            os.path.join(HERE, 'hmdb51_label_list.txt'))


if __name__ == '__main__':
    main()
