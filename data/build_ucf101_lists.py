"""Build UCF101 list files (`path label` per line) from the official split files.

    python -m data.build_ucf101_lists --root /data/UCF-101 --splits /data/ucfTrainTestlist \
        --split 1 --out_dir data/dataset/ucf101

--root is the unpacked UCF101.rar (UCF-101/<Class>/v_<Class>_gXX_cYY.avi); --splits the
unpacked UCF101TrainTestSplits-RecognitionTask.zip (classInd.txt, trainlist0N.txt:
`Class/video.avi index`, testlist0N.txt: `Class/video.avi`).  Labels are classInd's order,
1..101 -> 0..100, the order of data/ucf101_label_list.txt; class names are matched whatever
their case (the split files say HandstandPushups, the videos v_HandStandPushups_...).
Writes ucf101_train_split_N.list and ucf101_val_split_N.list; videos the split names but
the disk lacks are counted and the first few named.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

from data.build_kinetics_lists import (normalize, read_label_list,
                                      split_lists_main, write_split_lists)


def read_class_ind(path):
    """classInd.txt ('1 ApplyEyeMakeup' ...) -> [names] in index order."""
    rows = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            if line.strip():
                idx, name = line.split()
                rows.append((int(idx), name))
    rows.sort()
    if [i for i, _ in rows] != list(range(1, len(rows) + 1)):
        raise ValueError(f"{path}: indices are not 1..{len(rows)}")
    return [n for _, n in rows]


def locate(root, rel):
    """Root/Class/video.avi, or root/video.avi for trees without class folders."""
    for path in (os.path.join(root, rel), os.path.join(root, os.path.basename(rel))):
        if os.path.isfile(path):
            return path
    return None


def read_split(path, root, labels, with_index):
    """-> ([(video path, label)], [missing relative paths])."""
    items, missing = [], []
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            rel = parts[0].replace('\\', '/')
            cls = rel.split('/')[0] if '/' in rel else rel.split('_')[1]  # v_<Class>_g01_c01
            label = labels.get(normalize(cls))
            if label is None:
                raise ValueError(f"{path}:{n}: unknown class '{cls}'")
            if with_index and len(parts) > 1 and int(parts[1]) - 1 != label:
                raise ValueError(f"{path}:{n}: index {parts[1]} is not class '{cls}' "
                                 f"(label list says {label + 1})")
            video = locate(root, rel)
            if video is None:
                missing.append(rel)
            else:
                items.append((video, label))
    return items, missing


def build(root, splits, split, out_dir, labels_path=os.path.join(HERE, 'ucf101_label_list.txt')):
    """-> {'train': n, 'val': n, 'missing': n}; writes the two list files."""
    labels = read_label_list(labels_path)
    class_ind = os.path.join(splits, 'classInd.txt')
    if os.path.isfile(class_ind):
        names = [normalize(n) for n in read_class_ind(class_ind)]
        if names != sorted(labels, key=labels.get):
            raise ValueError(f"{class_ind} does not list the classes of {labels_path} in its "
                             f"order")
    lists, missing = {}, []
    for kind, name in (('train', 'trainlist'), ('val', 'testlist')):
        lists[kind], lost = read_split(os.path.join(splits, f'{name}{split:02d}.txt'), root,
                                       labels, with_index=kind == 'train')
        missing += lost
    return write_split_lists(lists, out_dir, 'ucf101', split, missing)


def main(argv=None):
    return split_lists_main(argv, __doc__, build, 'UCF-101 folder (class folders of .avi)',
                            'ucfTrainTestlist folder', 'data/dataset/ucf101',
                            os.path.join(HERE, 'ucf101_label_list.txt'))


if __name__ == '__main__':
    main()
