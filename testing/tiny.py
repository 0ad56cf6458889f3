"""The tests' tiny config (ResNet-18, 4 frames at 32 px, 3 classes) and a tiny dataset."""
import numpy as np
import yaml

from testing.media import write_video

TINY = {
    'MODEL': {'num_classes': 3, 'seg_num': 4, 'num_layers': 18},
    'TRAIN': {'epoch': 2, 'short_size': 36, 'target_size': 32, 'num_reader_threads': 0,
              'batch_size': 4, 'learning_rate': 0.01, 'decay_epochs': [1], 'use_gpu': False},
    'VALID': {'short_size': 36, 'target_size': 32, 'num_reader_threads': 0, 'batch_size': 4},
    'TEST': {'short_size': 36, 'target_size': 32, 'num_reader_threads': 0, 'batch_size': 4},
    'INFER': {'short_size': 36, 'target_size': 32, 'num_reader_threads': 0, 'batch_size': 2},
}


def write_config(path, sections):
    with open(path, 'w') as f:
        yaml.safe_dump(sections, f)
    return str(path)


def tiny_sections(**infer):
    """A copy of TINY, its INFER section updated with `infer`."""
    sections = {k: dict(v) for k, v in TINY.items()}
    sections['INFER'].update(infer)
    return sections


def make_tiny_dataset(tmp_path):
    """7 small videos over 3 classes, list files and a tiny config in tmp_path (a
    pathlib.Path); -> dict of paths."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(7):
        clip = rng.integers(0, 256, (12, 40, 48, 3), dtype=np.uint8)
        clip[:, :, :, i % 3] //= 4  # a colour cast per class: learnable, cheap
        lines.append(f"{write_video(tmp_path / f'v {i}.avi', clip)} {i % 3}")
    (tmp_path / 'train.list').write_text('\n'.join(lines) + '\n')
    (tmp_path / 'val.list').write_text('\n'.join(lines[:5]) + '\n')
    (tmp_path / 'infer.list').write_text('\n'.join(lines[:2]) + '\n')
    (tmp_path / 'labels.txt').write_text('0 red\n1 green\n2 blue\n')
    sections = tiny_sections(filelist=str(tmp_path / 'infer.list'),
                             kinetics_labels=str(tmp_path / 'labels.txt'))
    sections['TRAIN']['filelist'] = str(tmp_path / 'train.list')
    sections['VALID']['filelist'] = str(tmp_path / 'val.list')
    sections['TEST']['filelist'] = str(tmp_path / 'val.list')
    return {'dir': tmp_path, 'config': write_config(tmp_path / 'tiny.yaml', sections),
            'lines': lines}
