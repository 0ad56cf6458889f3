"""Pure-numpy reader for Paddle's legacy (fluid) LoDTensor files (testing/lod_files.py
writes them, for the tests).

This is the one-file-per-variable format written by ``fluid.io.save_vars`` /
``save_params`` / ``save_persistables`` and ``paddle.static.save_vars`` when
no ``filename`` is given (e.g. the model-zoo ``ResNet50_pretrained/`` folder:
``conv1_weights``, ``bn_conv1_scale``, ...).  Layout, all little-endian, as in
Paddle's ``SerializeToStream`` / ``TensorToStream`` (phi/core/framework/
dense_tensor_serialize.cc, formerly fluid/framework/lod_tensor.cc):

    uint32  LoD version, must be 0
    uint64  lod_level
    lod_level times:  uint64 nbytes, then nbytes of uint64 offsets
    uint32  tensor version, must be 0
    int32   size of the TensorDesc protobuf that follows
    bytes   VarType.TensorDesc {1: data_type (enum varint), 2: dims (int64)}
    bytes   raw tensor data, C order, prod(dims) * itemsize bytes

Only reading needs nothing but numpy; no paddle import anywhere.
"""
import os
import struct

import numpy as np

__all__ = ["read_lod_tensor", "load_param_dir"]

# paddle.framework.proto.VarType.Type (framework.proto) -> numpy dtype.
# BF16 (22) has no numpy dtype; it is handled specially in read_lod_tensor.
_PROTO_TO_NP = {
    0: np.bool_,        # BOOL
    1: np.int16,        # INT16
    2: np.int32,        # INT32
    3: np.int64,        # INT64
    4: np.float16,      # FP16
    5: np.float32,      # FP32
    6: np.float64,      # FP64
    20: np.uint8,       # UINT8
    21: np.int8,        # INT8
    23: np.complex64,   # COMPLEX64
    24: np.complex128,  # COMPLEX128
}
_BF16 = 22


def _varint(buf, pos):
    """Decode one protobuf varint from buf[pos:]; return (value, new_pos)."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint in TensorDesc")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _parse_desc(desc):
    """Parse a VarType.TensorDesc message -> (data_type, dims)."""
    data_type, dims, pos = None, [], 0
    while pos < len(desc):
        key, pos = _varint(desc, pos)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 0:       # data_type
            data_type, pos = _varint(desc, pos)
        elif field == 2 and wire == 0:     # dims, unpacked (what Paddle writes)
            d, pos = _varint(desc, pos)
            dims.append(d)
        elif field == 2 and wire == 2:     # dims, packed (also legal proto2)
            n, pos = _varint(desc, pos)
            end = pos + n
            if end > len(desc):
                raise ValueError("truncated packed dims in TensorDesc")
            while pos < end:
                d, pos = _varint(desc, pos)
                dims.append(d)
        else:
            raise ValueError(f"unexpected field {field} (wire type {wire}) in TensorDesc")
    if data_type is None:
        raise ValueError("TensorDesc has no data_type")
    if any(d >= 1 << 63 for d in dims):  # negative int64 (e.g. -1)
        raise ValueError(f"negative dimension in TensorDesc: {dims}")
    return data_type, dims


def _parse(buf):
    """Decode a whole file's bytes into an ndarray (errors -> ValueError)."""
    def need(pos, n, what):
        if pos + n > len(buf):
            raise ValueError(f"truncated: need {n} bytes for {what} at offset {pos}, "
                             f"file has {len(buf)}")

    need(0, 12, "LoD header")
    lod_version, lod_level = struct.unpack_from("<IQ", buf, 0)
    if lod_version != 0:
        raise ValueError(f"unsupported LoD version {lod_version} (expected 0)")
    pos = 12
    if lod_level > len(buf):  # each level needs >= 8 bytes; cheap sanity bound
        raise ValueError(f"implausible lod_level {lod_level}")
    for _ in range(lod_level):  # LoD offsets are not needed for parameters: skip
        need(pos, 8, "LoD level size")
        (nbytes,) = struct.unpack_from("<Q", buf, pos)
        pos += 8
        if nbytes % 8:
            raise ValueError(f"LoD level size {nbytes} is not a multiple of 8")
        need(pos, nbytes, "LoD offsets")
        pos += nbytes

    need(pos, 8, "tensor header")
    version, desc_size = struct.unpack_from("<Ii", buf, pos)
    pos += 8
    if version != 0:
        raise ValueError(f"unsupported tensor version {version} (expected 0)")
    if desc_size < 0:
        raise ValueError(f"negative TensorDesc size {desc_size}")
    need(pos, desc_size, "TensorDesc")
    data_type, dims = _parse_desc(buf[pos:pos + desc_size])
    pos += desc_size

    if data_type == _BF16:
        dtype = np.dtype("<u2")
    elif data_type in _PROTO_TO_NP:
        dtype = np.dtype(_PROTO_TO_NP[data_type]).newbyteorder("<")
    else:
        raise ValueError(f"unsupported data_type enum {data_type}")
    count = int(np.prod(dims, dtype=object)) if dims else 1
    nbytes = count * dtype.itemsize
    if len(buf) - pos != nbytes:
        raise ValueError(f"data size mismatch: dims {dims} x {dtype.itemsize} bytes = "
                         f"{nbytes}, but {len(buf) - pos} bytes remain in file")
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=pos).reshape(dims)
    if data_type == _BF16:  # bfloat16 = top half of float32: widen losslessly
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(dtype.newbyteorder("="))  # copy, native order, writable


def read_lod_tensor(path):
    """Read one legacy LoDTensor file and return it as a numpy array.

    The LoD (sequence offsets) is ignored.  BF16 tensors come back as float32.
    Raises ValueError (naming ``path``) for truncated or malformed files.
    """
    with open(path, "rb") as f:
        buf = f.read()
    try:
        return _parse(buf)
    except ValueError as e:
        raise ValueError(f"{path}: not a valid Paddle LoDTensor file: {e}") from None


def load_param_dir(dirname):
    """Read every regular, non-hidden file in ``dirname`` -> {name: ndarray}.

    Not recursive.  A file that is not in this format raises ValueError
    naming it (so don't point this at a folder that also holds ``__model__``).
    """
    params = {}
    for name in sorted(os.listdir(dirname)):
        path = os.path.join(dirname, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        params[name] = read_lod_tensor(path)
    return params
