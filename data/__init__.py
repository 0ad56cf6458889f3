"""Data preparation: list builders for Kinetics, UCF101 and HMDB51 (python -m
data.build_ucf101_lists ...), video2pkl, the label lists, and the demo's generated dataset.

May import: utils, models, metrics, reader."""
