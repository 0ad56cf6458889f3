"""Tests for models/lod_tensor.py, cross-checked against Paddle's own serializer.

Paddle APIs used for the cross-check (all CPU, no network):
  writer: paddle.static.save_vars (one file per var, filename=None)
          core.save_dense_tensor (3.x) / core.save_lod_tensor (2.x)
  reader: paddle.static.load_program_state(dirname)  (needs the legacy IR in
          3.x: under PIR it silently returns {} for a directory in 3.3.1)
          paddle.static.load_vars, core.load_dense_tensor / core.load_lod_tensor
"""
import contextlib
import os
import re
import struct
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models.lod_tensor import load_param_dir, read_lod_tensor  # noqa: E402
from testing.lod_files import write_lod_tensor  # noqa: E402

try:
    import paddle
    from paddle.base import core
except ImportError:  # the pure-numpy tests still run
    paddle = core = None
needs_paddle = pytest.mark.skipif(paddle is None, reason="paddle not installed")

SHAPES = [(1,), (7,), (3, 4), (2, 3, 5), (8, 3, 7, 7)]


def _arr(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if np.dtype(dtype).kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------- pure numpy
@pytest.mark.parametrize("dtype", ["float32", "int64"])
@pytest.mark.parametrize("shape", [()] + SHAPES + [(0, 4)])
def test_roundtrip(tmp_path, dtype, shape):
    a = _arr(shape, dtype)
    write_lod_tensor(tmp_path / "p", a)
    _same(read_lod_tensor(tmp_path / "p"), a)


@pytest.mark.parametrize("dtype", ["float16", "float64", "int32", "int16",
                                   "int8", "uint8", "bool"])
def test_roundtrip_other_dtypes(tmp_path, dtype):
    a = _arr((4, 5), dtype)
    write_lod_tensor(tmp_path / "p", a)
    _same(read_lod_tensor(tmp_path / "p"), a)


def test_noncontiguous_and_bigendian_input(tmp_path):
    a = _arr((4, 6), "float32").T  # Fortran-ordered view
    write_lod_tensor(tmp_path / "t", a)
    _same(read_lod_tensor(tmp_path / "t"), np.ascontiguousarray(a))
    write_lod_tensor(tmp_path / "be", a.astype(">f4"))
    assert (tmp_path / "be").read_bytes() == (tmp_path / "t").read_bytes()


def test_packed_dims_and_lod_levels_accepted(tmp_path):
    # Hand-built: 1 LoD level [0, 2, 3], packed dims [3, 2] (field 2, wire 2).
    data = np.arange(6, dtype="<f4")
    desc = b"\x08\x05" + b"\x12\x02\x03\x02"
    lod = np.array([0, 2, 3], "<u8").tobytes()
    blob = (struct.pack("<IQQ", 0, 1, len(lod)) + lod
            + struct.pack("<Ii", 0, len(desc)) + desc + data.tobytes())
    (tmp_path / "x").write_bytes(blob)
    _same(read_lod_tensor(tmp_path / "x"), data.reshape(3, 2))


def _bad(path, blob):
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_lod_tensor(path)


def test_truncated_file_raises(tmp_path):
    write_lod_tensor(tmp_path / "ok", _arr((3, 4), "float32"))
    good = (tmp_path / "ok").read_bytes()  # 12 + 8 + 6 (desc) + 48 bytes
    for n in [0, 3, 11, 12, 19, 23, len(good) - 47, len(good) - 1]:
        _bad(tmp_path / f"cut{n}", good[:n])


def test_garbage_and_corrupt_files_raise(tmp_path):
    write_lod_tensor(tmp_path / "ok", _arr((3, 4), "float32"))
    good = (tmp_path / "ok").read_bytes()
    rng = np.random.default_rng(1)
    _bad(tmp_path / "random", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _bad(tmp_path / "text", b"this is not a tensor file\n" * 10)
    _bad(tmp_path / "trailing", good + b"\0")
    _bad(tmp_path / "lod_version", b"\x01" + good[1:])
    _bad(tmp_path / "tensor_version", good[:12] + b"\x01" + good[13:])
    _bad(tmp_path / "neg_desc", good[:16] + struct.pack("<i", -6) + good[20:])
    assert good[20:22] == b"\x08\x05"  # data_type FP32 -> unknown enum 99
    _bad(tmp_path / "dtype", good[:21] + b"\x63" + good[22:])


def test_load_param_dir(tmp_path):
    a, b = _arr((2, 3), "float32"), _arr((5,), "int64")
    write_lod_tensor(tmp_path / "conv1_weights", a)
    write_lod_tensor(tmp_path / "step", b)
    (tmp_path / ".hidden").write_bytes(b"junk")
    (tmp_path / "subdir").mkdir()
    got = load_param_dir(tmp_path)
    assert sorted(got) == ["conv1_weights", "step"]
    _same(got["conv1_weights"], a)
    _same(got["step"], b)
    (tmp_path / "__model__").write_bytes(b"\x0a\x05hello")
    with pytest.raises(ValueError, match="__model__"):
        load_param_dir(tmp_path)


# ------------------------------------------------- cross-check with Paddle
@contextlib.contextmanager
def _static(legacy_ir):
    """Static mode; legacy_ir=True forces the old (fluid ProgramDesc) IR.

    Paddle 3.x defaults to PIR; 2.x only has the legacy IR, so there the two
    modes are the same thing.
    """
    guard = contextlib.nullcontext()
    if legacy_ir:
        old = getattr(getattr(paddle, "pir_utils", None), "OldIrGuard", None)
        if old is not None:
            guard = old()
    paddle.enable_static()
    try:
        with guard:
            yield
    finally:
        paddle.disable_static()


def _program_with(arrays):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        vs = [paddle.static.create_parameter(
            list(a.shape), str(a.dtype), name=n,
            default_initializer=paddle.nn.initializer.Constant(0))
            for n, a in arrays.items()]
    return main, startup, vs


def _paddle_save_vars(dirname, arrays):
    """Write {name: array} with paddle.static.save_vars, one file per var."""
    main, startup, vs = _program_with(arrays)
    scope, place = paddle.static.Scope(), paddle.CPUPlace()
    with paddle.static.scope_guard(scope):
        exe = paddle.static.Executor(place)
        exe.run(startup)
        for n, a in arrays.items():
            scope.find_var(n).get_tensor().set(a, place)
        paddle.static.save_vars(exe, str(dirname), main, vars=vs)


def _paddle_load_vars(dirname, arrays):
    """Read {name: like-array} back with paddle.static.load_vars."""
    main, startup, vs = _program_with(arrays)
    scope, place = paddle.static.Scope(), paddle.CPUPlace()
    with paddle.static.scope_guard(scope):
        exe = paddle.static.Executor(place)
        exe.run(startup)
        paddle.static.load_vars(exe, str(dirname), main, vars=vs)
        return {n: np.array(scope.find_var(n).get_tensor()) for n in arrays}


def _params():
    return {"conv1_weights": _arr((8, 3, 7, 7), "float32", 1),
            "bn_conv1_scale": _arr((8,), "float32", 2),
            "fc_0.w_0": _arr((6, 5), "float64", 3),
            "step_counter": _arr((2, 3), "int64", 4)}


@needs_paddle
@pytest.mark.parametrize("legacy_ir", [False, True], ids=["default_ir", "legacy_ir"])
def test_paddle_save_vars_read_by_us(tmp_path, legacy_ir):
    params = _params()
    with _static(legacy_ir):
        _paddle_save_vars(tmp_path / "pd", params)
    got = load_param_dir(tmp_path / "pd")
    assert sorted(got) == sorted(params)
    for n, a in params.items():
        _same(got[n], a)
        # and our writer produces the very same bytes
        write_lod_tensor(tmp_path / n, a)
        assert (tmp_path / n).read_bytes() == (tmp_path / "pd" / n).read_bytes()


@needs_paddle
def test_ours_read_by_paddle_load_program_state(tmp_path):
    params = _params()
    for n, a in params.items():
        write_lod_tensor(tmp_path / n, a)
    with _static(legacy_ir=True):  # PIR path returns {} for a dir in 3.3.1
        state = paddle.static.load_program_state(str(tmp_path))
    assert sorted(state) == sorted(params)
    for n, a in params.items():
        _same(np.asarray(state[n]), a)


@needs_paddle
@pytest.mark.parametrize("legacy_ir", [False, True], ids=["default_ir", "legacy_ir"])
def test_ours_read_by_paddle_load_vars(tmp_path, legacy_ir):
    params = _params()
    for n, a in params.items():
        write_lod_tensor(tmp_path / n, a)
    with _static(legacy_ir):
        got = _paddle_load_vars(tmp_path, params)
    for n, a in params.items():
        _same(got[n], a)


def _core_fn(new, old):  # core.*_dense_tensor in 3.x, core.*_lod_tensor in 2.x
    return getattr(core, new, None) or getattr(core, old)


@needs_paddle
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64",
                                   "int32", "int16", "int8", "uint8", "bool"])
def test_core_serializer_both_ways(tmp_path, dtype):
    save = _core_fn("save_dense_tensor", "save_lod_tensor")
    load = _core_fn("load_dense_tensor", "load_lod_tensor")
    tensor_cls = getattr(core, "DenseTensor", None) or core.LoDTensor
    a = _arr((3, 5), dtype)
    t = tensor_cls()
    t.set(a, paddle.CPUPlace())
    save(t, str(tmp_path / "pd"))
    _same(read_lod_tensor(tmp_path / "pd"), a)
    write_lod_tensor(tmp_path / "ours", a)
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "pd").read_bytes()
    t2 = tensor_cls()
    load(t2, str(tmp_path / "ours"))
    _same(np.array(t2), a)


@needs_paddle
def test_paddle_lod_and_bf16_files(tmp_path):
    save = _core_fn("save_dense_tensor", "save_lod_tensor")
    tensor_cls = getattr(core, "DenseTensor", None) or core.LoDTensor
    a = np.arange(12, dtype="float32").reshape(6, 2)
    t = tensor_cls()
    t.set(a, paddle.CPUPlace())
    t.set_lod([[0, 2, 6]])
    save(t, str(tmp_path / "lod"))
    _same(read_lod_tensor(tmp_path / "lod"), a)
    # bfloat16 values exactly representable -> read back as float32, exactly
    b = np.array([[1.5, -2.25], [3.0, 0.0078125]], dtype="float32")
    x = paddle.to_tensor(b).astype("bfloat16")
    save(x.value().get_tensor(), str(tmp_path / "bf16"))
    _same(read_lod_tensor(tmp_path / "bf16"), b)
