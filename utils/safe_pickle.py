"""Pickle loading that admits only data: numpy arrays, scalars and plain containers.

`.pdparams` / `.pdopt` / video `.pkl` files may come from anywhere; a plain
`pickle.load` runs whatever code the file names.  This unpickler refuses every
global that is not on the allow-list below, with the file and the global named.
"""
import pickle

_ALLOWED = {
    ('builtins', n) for n in ('tuple', 'list', 'dict', 'set', 'frozenset', 'int', 'float',
                              'complex', 'str', 'bytes', 'bytearray', 'bool', 'slice')
} | {
    ('__builtin__', n) for n in ('tuple', 'list', 'dict', 'set', 'frozenset', 'int', 'float',
                                 'long', 'str', 'unicode', 'bytearray', 'bool')
} | {
    ('collections', 'OrderedDict'),
    ('_codecs', 'encode'),  # how protocol-2 pickles made by Python 3 spell bytes
    ('copy_reg', '_reconstructor'), ('copyreg', '_reconstructor'),
    ('numpy', 'ndarray'), ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
}


class UnsafePickleError(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(  # callers name the file
            f"refused to load '{module}.{name}' (only arrays and plain containers are "
            f"allowed in weight and data files)")


def safe_load(path, encoding='latin1'):
    """Load a pickle file from disk with the restricted unpickler."""
    with open(path, 'rb') as f:
        return _RestrictedUnpickler(f, encoding=encoding).load()
