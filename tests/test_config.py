"""Config: the original's sections and values, attribute access, overrides, one-line errors."""
import pytest

from testing.tiny import write_config
from tests.conftest import run_main
from utils.config_utils import (ConfigError, apply_overrides, explicit_keys, merge_configs,
                                parse_config, print_configs, to_plain)


def test_original_values_and_access():
    cfg = parse_config('configs/tsm.yaml')
    assert cfg.MODEL.seg_num == cfg['MODEL']['seg_num'] == 8
    assert cfg.MODEL.format == 'mp4' and cfg.MODEL.num_layers == 50
    assert cfg.TRAIN.l2_weight_decay == pytest.approx(1e-4)  # '1e-4' read as a float
    assert isinstance(cfg.TRAIN.l2_weight_decay, float)
    assert cfg.TRAIN.decay_epochs == [40, 60] and cfg.TRAIN.batch_size == 128
    assert cfg.TEST.batch_size == 16 and cfg.INFER.batch_size == 1
    assert cfg.MODEL.image_mean == [0.485, 0.456, 0.406]
    cfg.MODEL.seg_num = 16
    assert cfg['MODEL']['seg_num'] == 16
    cfg['TRAIN']['epoch'] = 3
    assert cfg.TRAIN.epoch == 3


def test_flags_and_overrides():
    cfg = parse_config('configs/tsm.yaml')
    merge_configs(cfg, 'TRAIN', {'batch_size': 8, 'learning_rate': None, 'epoch': 2})
    assert cfg.TRAIN.batch_size == 8 and cfg.TRAIN.learning_rate == 0.01 and cfg.TRAIN.epoch == 2
    apply_overrides(cfg, ['MODEL.num_classes=101', 'TRAIN.decay_epochs=[3, 5]',
                          'INFER.video_path=a b.mp4', 'MODEL.shift_ratio=0'])
    assert cfg.MODEL.num_classes == 101 and cfg.TRAIN.decay_epochs == [3, 5]
    assert cfg.INFER.video_path == 'a b.mp4' and cfg.MODEL.shift_ratio == 0.0


def test_keys_given_on_the_command_line_are_recorded(caplog):
    """Flags and -o are recorded as given explicitly (they beat what weights imply); the
    config file's values are not; the record is no key of the config."""
    import copy
    import logging
    cfg = parse_config('configs/tsm.yaml')
    assert explicit_keys(cfg, 'MODEL') == set()
    merge_configs(cfg, 'TRAIN', {'batch_size': 8, 'learning_rate': None})
    apply_overrides(cfg, ['MODEL.shift_ratio=0', 'MODEL.head=logit_mean'])
    assert explicit_keys(cfg, 'MODEL') == {'shift_ratio', 'head'}
    assert explicit_keys(cfg, 'TRAIN') == {'batch_size'}  # a flag left unset is not given
    assert explicit_keys(copy.deepcopy(cfg), 'MODEL') == {'shift_ratio', 'head'}
    plain = to_plain(cfg)
    assert set(plain) == {'MODEL', 'TRAIN', 'VALID', 'TEST', 'INFER'}
    assert plain['MODEL']['shift_ratio'] == 0.0
    with caplog.at_level(logging.INFO):
        print_configs(cfg, 'Test', logging.getLogger('test_config'))
    assert 'MODEL.shift_ratio: 0.0' in caplog.text and 'explicit' not in caplog.text


@pytest.mark.parametrize('sections,match', [
    ({'MODLE': {'seg_num': 8}}, "unknown section 'MODLE'"),
    ({'MODEL': {'seg_nmu': 8}}, "unknown key 'MODEL.seg_nmu'"),
    ({'MODEL': {'seg_num': 'eight'}}, "'MODEL.seg_num' must be an integer"),
    ({'MODEL': {'seg_num': 0}}, "'MODEL.seg_num' must be positive"),
    ({'MODEL': {'seg_num': 8.5}}, "'MODEL.seg_num' must be an integer"),
    ({'TRAIN': {'use_gpu': 'yes'}}, "'TRAIN.use_gpu' must be a boolean"),
    ({'TRAIN': {'learning_rate': '0.1'}}, "'TRAIN.learning_rate' must be a number"),
    ({'MODEL': {'format': 'avi'}}, "'MODEL.format' must be one of"),
    ({'MODEL': {'num_layers': 77}}, "'MODEL.num_layers' must be one of"),
    ({'MODEL': {'image_std': [0.2, 0.2]}}, "'MODEL.image_std' must be a list of 3"),
    ({'TEST': {'target_size': 300}}, "'TEST.target_size' must not exceed"),
])
def test_bad_configs_name_the_key(tmp_path, sections, match):
    path = write_config(tmp_path / 'bad.yaml', sections)
    with pytest.raises(ConfigError, match=match) as err:
        parse_config(path)
    assert str(path) in str(err.value) and '\n' not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match='config file not found: .*nope.yaml'):
        parse_config(str(tmp_path / 'nope.yaml'))
    bad = tmp_path / 'broken.yaml'
    bad.write_text('MODEL:\n  seg_num: [1, 2\n')
    with pytest.raises(ConfigError, match='broken.yaml: line'):
        parse_config(str(bad))


@pytest.mark.parametrize('override,match', [
    ('MODEL.seg_num', 'must look like SECTION.key=value'),
    ('MODEL.nope=1', "unknown key 'MODEL.nope'"),
    ('TRAIN.epoch=1.5', "'TRAIN.epoch' must be an integer"),
])
def test_bad_overrides(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(parse_config('configs/tsm.yaml'), [override])


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    """The config is read before any work: the scripts' main() in this process."""
    import eval as eval_script
    import predict
    import train
    for main, args, expected in [
        (train.main, ['--config', str(tmp_path / 'none.yaml')], 'config file not found'),
        (eval_script.main, ['-o', 'MODEL.seg_num=0'], "'MODEL.seg_num' must be positive"),
        (predict.main, ['-o', 'TEST.bogus=1'], "unknown key 'TEST.bogus'"),
    ]:
        code, out, err = run_main(main, *args)
        assert code == 2, err
        assert expected in err and 'Traceback' not in err + out
        assert len(err.strip().splitlines()) == 1, err


def test_every_shipped_config_parses():
    import glob
    paths = glob.glob('configs/*.yaml')
    assert 'configs/tsm.yaml' in paths
    for path in paths:
        assert parse_config(path).MODEL.num_classes > 0
