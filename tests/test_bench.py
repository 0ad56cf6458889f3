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
    assert set(prim) == {'tsn', 'tsm_split', 'tsm_conv', 'tsm_split_without_moves'} and min(
        p['total_ms'] for p in prim.values()) > 0
    assert set(data['shift_overhead_primitives']) == {'split', 'conv', 'split_without_moves'}
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
    assert set(data['overhead_breakdown']) == {'layout', 'moves'}
    assert min(data['overhead_breakdown'].values()) > -1


def count_slices(prefix):
    """slice ops in an exported program (.json under PIR, .pdmodel before)."""
    if os.path.isfile(prefix + '.json'):
        with open(prefix + '.json', encoding='utf-8') as f:
            return f.read().count('"#":"1.slice"')
    from paddle.base.proto import framework_pb2
    with open(prefix + '.pdmodel', 'rb') as f:
        program = framework_pb2.ProgramDesc.FromString(f.read())
    return sum(op.type == 'slice' for block in program.blocks for op in block.ops)


def test_split_export_without_moves_leaves_out_only_the_moves(tmp_path):
    """The bench's timing-only program: the split program minus its frame moves (so it
    computes something else), and the real moves are back for every later export."""
    import sys
    import numpy as np
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'bench'))
    import common
    from utils.inference import InferenceModel, export
    shape = [4, 3, 32, 32]
    model = common.build_tsm(18, 10, 4, 32, 0.125)
    x = np.random.default_rng(1).standard_normal([1, *shape]).astype('float32')
    without = common.export_split_without_moves(model, str(tmp_path / 'without' / 'model'),
                                                shape)
    split = export(model, str(tmp_path / 'split' / 'model'), shape, 'split', 1)
    # the moves are the only slices along frames: 2 folds x 8 blocks x 1 clip of ResNet-18
    assert count_slices(split) - count_slices(without) == 2 * 8
    eager = model(__import__('paddle').to_tensor(x)).numpy()
    assert np.abs(InferenceModel(split, 1).run(x) - eager).max() < 1e-4
    assert np.abs(InferenceModel(without, 1).run(x) - eager).max() > 1e-3
