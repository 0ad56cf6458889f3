"""`tools/demo.py --quick` end to end: data, train, eval and predict through the real CLIs,
summary.json and the pictures (tiny sizes, so the accuracies mean nothing)."""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PICTURES = ('curves.png', 'confusion_tsm.png', 'confusion_tsn.png', 'predict_frames.png')


def _is_png(path):
    with open(path, 'rb') as f:
        head = f.read(24)
    # signature, then the IHDR chunk with a non-zero width and height
    width, height = int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')
    return head[:8] == PNG_SIGNATURE and head[12:16] == b'IHDR' and width > 0 and height > 0


def test_demo_quick(tmp_path):
    out = tmp_path / 'demo'
    proc = subprocess.run([sys.executable, 'tools/demo.py', '--out_dir', str(out), '--quick'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / 'summary.json', encoding='utf-8') as f:
        summary = json.load(f)
    for model in ('tsm', 'tsn'):
        for key in ('top1', 'top5'):
            assert 0.0 <= summary[model][key] <= 1.0
    assert summary['tsm']['shift_ratio'] > 0 and summary['tsn']['shift_ratio'] == 0
    assert summary['seconds'] > 0 and summary['quick'] is True
    assert summary['machine']['cpu_count'] >= 1 and summary['machine']['platform']
    assert summary['prediction']['top_names'] and len(summary['prediction']['top_probs']) == 3
    for name in PICTURES:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        assert _is_png(path), name
    assert sorted(summary['pictures'].values()) == sorted(PICTURES)
    # the final table names both models
    assert 'TSM' in proc.stdout and 'TSN' in proc.stdout


def test_demo_failure_is_one_line(tmp_path):
    """A step that fails ends the demo with one line naming the step."""
    out = tmp_path / 'demo'
    bad = tmp_path / 'missing.list'
    proc = subprocess.run([sys.executable, 'tools/demo.py', '--out_dir', str(out), '--quick',
                           '-o', f'TRAIN.filelist={bad}'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith('error:'), proc.stderr
    # both trainings fail; whichever fails first is named
    assert re.search(r"step 'train TS[MN]' failed", lines[0]) and 'missing.list' in lines[0]
    assert not (out / 'summary.json').exists()
