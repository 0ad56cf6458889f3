"""Every bench script runs (bench/run.py --quick) and writes the headline keys."""
import json
import os

from tests.conftest import run_cli

KEYS = ('shift_overhead_exported', 'shift_overhead_eager', 'vs_pytorch', 'inference_speedup',
        'matmul_peak_fraction', 'export_max_abs_diff', 'reader_floor_ratio',
        'reader_speedup_test', 'reader_worker_scaling', 'pkl_speedup', 'train_step_clips_per_s',
        'train_peak_mem_mb', 'machine', 'shift_overhead_primitives')


def test_bench_quick_runs_every_script(tmp_path):
    out = tmp_path / 'bench.json'
    res = run_cli(os.path.join('bench', 'run.py'), '--quick', '--out', str(out), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    missing = [k for k in KEYS if k not in data]
    assert not missing, missing
    for k in KEYS[:10]:
        if k == 'vs_pytorch' and data[k] is None:  # torch is optional
            continue
        assert isinstance(data[k], float) and data[k] == data[k], k
    for k in ('train_step_clips_per_s', 'train_peak_mem_mb'):
        assert set(data[k]) == {'tsm', 'tsn'} and min(data[k].values()) > 0
    assert data['inference']['export_max_abs_diff'] < 1e-4
    assert data['machine']['cpus_available'] >= 1
    # the reader's 2-worker scaling comes with the machine's own (plain processes)
    assert data['decode_process_scaling'] > 0 and data['reader_worker_scaling'] > 0
    prim = data['primitives']['programs']  # every program's oneDNN primitives were seen
    assert set(prim) == {'tsn', 'tsm_split', 'tsm_conv'} and min(
        p['total_ms'] for p in prim.values()) > 0
    assert set(data['shift_overhead_primitives']) == {'split', 'conv'}
    # the headline shift overhead comes from the process holding TSN and TSM alone
    assert data['shift_overhead_exported'] == data['pair']['shift_overhead_exported']
    assert data['shift_overhead_exported_crowded'] == data['inference']['shift_overhead_exported']
    assert data['vs_pytorch'] == data['pair']['vs_pytorch']


def test_inference_bench_pair_only(tmp_path):
    out = tmp_path / 'pair.json'
    res = run_cli(os.path.join('bench', 'inference.py'), '--quick', '--pair_only', '--out',
                  str(out), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert len(data['ratios']) == data['pairs'] == 4 and min(data['ratios']) > 0
    assert data['shift_overhead_exported'] > -1
