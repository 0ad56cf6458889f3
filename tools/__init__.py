"""Command-line tools beside the entry scripts (python -m tools.<name>): the demo, weight
conversion from PyTorch, int8 quantization, and plots.

May import: utils, models, metrics, reader, engines, training, inference, jobs, data."""
