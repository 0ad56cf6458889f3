"""Paddle's legacy (fluid) LoDTensor files written from numpy, byte for byte as Paddle's
own serializer writes them: the model zoo's ResNet50_pretrained/ folder made for the
tests (models/lod_tensor.py reads them; its docstring has the layout)."""
import struct

import numpy as np

from models.lod_tensor import _PROTO_TO_NP

_NP_TO_PROTO = {np.dtype(v): k for k, v in _PROTO_TO_NP.items()}


def _enc_varint(value):
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 -> two's complement, as protobuf
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_lod_tensor(path, array):
    """Write ``array`` as a legacy LoDTensor file (lod_level 0).

    Output is byte-identical to Paddle's own serializer for the same tensor.
    """
    arr = np.asarray(array)
    proto_type = _NP_TO_PROTO.get(np.dtype(arr.dtype.type))  # any byte order
    if proto_type is None:
        raise ValueError(f"unsupported dtype {arr.dtype} for {path}")
    desc = b"\x08" + _enc_varint(proto_type)
    for d in arr.shape:  # unpacked repeated int64, exactly as Paddle emits
        desc += b"\x10" + _enc_varint(d)
    data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    with open(path, "wb") as f:
        f.write(struct.pack("<IQ", 0, 0))              # LoD version, lod_level
        f.write(struct.pack("<Ii", 0, len(desc)))     # tensor version, desc size
        f.write(desc)
        f.write(data)
