"""What the README promises of a worker death that the crash tests do not reach: more
than 10 restarts in an epoch stop the run; a death whose video cannot be told (an
untracked loader) restarts that batch once and then gives it up; in shuffled training the
epoch goes on in the order it had, each video exactly once.  Each leaves nothing behind
(the fixtures of tests/test_crash_safety.py)."""
import logging

import pytest

from reader import get_reader
from testing.media import make_clip, write_video
from testing.tiny import TINY, write_config
from tests.test_crash_safety import _patch_decoder, generations, leaves_nothing  # noqa: F401
from utils.config_utils import parse_config
from training.loader import build_loader, resilient_batches
from training.loop import set_loader_epoch
from training.loader import LoaderError, TrackedDataset


def clips(tmp_path, bad, n=12, mode='valid'):
    """n items of one good video, those in `bad` under a name the decoder segfaults on."""
    good = write_video(tmp_path / 'good.avi', make_clip(8))
    lines = [f"{tmp_path / f'bad{i}.avi' if i in bad else good} {i % 3}" for i in range(n)]
    (tmp_path / 'v.list').write_text('\n'.join(lines) + '\n')
    cfg = parse_config(write_config(tmp_path / 'c.yaml', TINY))
    return get_reader('TSM', mode, cfg, filelist=str(tmp_path / 'v.list'))


def test_more_than_ten_restarts_stop_the_epoch(tmp_path, monkeypatch, leaves_nothing):  # noqa: F811
    _patch_decoder(monkeypatch, 'segfaults')
    # one worker: one death, one restart per video
    loader = build_loader(clips(tmp_path, bad=range(14), n=14), batch_size=1, num_workers=1)
    with pytest.raises(LoaderError, match=r'^data loader workers died 11 times; stopping '
                                          r'\(last: .*\)$'):
        for _ in resilient_batches(loader):
            pass


def test_an_unknown_culprit_costs_its_batch_after_one_retry(tmp_path, monkeypatch, caplog,
                                                            leaves_nothing):  # noqa: F811
    _patch_decoder(monkeypatch, 'segfaults')
    # the bad video in the first batch: a worker that dies also unlinks the batches it had
    # sent and not yet had read, so with a later one the death can show at an earlier batch
    loader = build_loader(clips(tmp_path, bad={1}), batch_size=2, num_workers=1)
    assert isinstance(loader.dataset, TrackedDataset)
    loader.dataset = loader.dataset.inner  # a loader whose workers' items cannot be told
    with caplog.at_level(logging.WARNING):
        got = [(i, len(b['paths']), int(b['failed'])) for i, b in resilient_batches(loader)]
    # batch 0 (items 0, 1) is tried twice, then given up whole: its good video too
    assert got == [(0, 0, 2), (1, 2, 0), (2, 2, 0), (3, 2, 0), (4, 2, 0), (5, 2, 0)]
    said = [r.getMessage() for r in caplog.records if 'data loader worker died' in r.getMessage()]
    assert len(said) == 2 and said[0].endswith('restarting the workers at batch 0')
    assert said[1].endswith('restarting the workers after batch 0, whose videos are counted '
                            'as failed')
    assert all('\n' not in m for m in said)


@pytest.mark.parametrize('epoch', [0, 3])
def test_shuffled_training_keeps_its_order_after_a_death(tmp_path, monkeypatch, epoch,
                                                        leaves_nothing):  # noqa: F811
    _patch_decoder(monkeypatch, 'segfaults')
    ds = clips(tmp_path, bad={7}, mode='train')
    loader = build_loader(ds, batch_size=3, num_workers=2, shuffle=True)
    set_loader_epoch(loader, epoch, seed=11)
    # the epoch's order as Paddle's sampler makes it, asked of the sampler itself
    sampler = loader.batch_sampler.inner
    sampler.set_epoch(epoch)
    order = [i for batch in sampler for i in batch]
    assert sorted(order) == list(range(12)) and order != list(range(12))
    got = [int(i) for _, b in resilient_batches(loader) for i in b['indices']]
    assert got == [i for i in order if i != 7]  # each once, in order, only the bad one lost
