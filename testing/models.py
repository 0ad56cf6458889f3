"""Models with random weights that behave like trained ones in scale: what the tests
and the benchmarks run when the timing or the plumbing, not the accuracy, is the point."""


def calibrate_bn(model, x):
    """Random weights make activations grow block after block; set every BN's running
    statistics to those of its input on `x` (one eval-mode forward), so that features and
    logits have a trained network's scale.  Deterministic for a given x."""
    import paddle
    hooks = []

    def pre(layer, inputs):
        v = inputs[0]
        layer._mean.set_value(v.mean(axis=[0, 2, 3]))
        layer._variance.set_value(v.var(axis=[0, 2, 3], unbiased=False))

    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            hooks.append(layer.register_forward_pre_hook(pre))
    model.eval()
    with paddle.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return model


def build_tsm(depth, num_classes, seg_num, size, shift_ratio=0.125, seed=0):
    """A TSM (shift_ratio 0: TSN) with random weights, BN calibrated on a random clip."""
    import paddle
    from models.tsm import TSM
    paddle.seed(seed)
    model = TSM(num_classes=num_classes, seg_num=seg_num, num_layers=depth,
                shift_ratio=shift_ratio)
    calibrate_bn(model, paddle.randn([1, seg_num, 3, size, size]))
    model.build_key = (depth, num_classes, seg_num, size, shift_ratio, seed)  # the same weights
    return model
