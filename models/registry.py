"""A tiny name -> class registry; names are case-insensitive."""

_MODELS = {}


class RegistryError(KeyError):
    """An unknown or twice-registered name; one-line message."""

    def __str__(self):
        return str(self.args[0]) if self.args else ''


def register(name):
    """Class decorator: `@register('TSM')`. A duplicate name is an error."""
    def wrap(cls):
        key = name.upper()
        if key in _MODELS:
            raise RegistryError(f"model '{name}' is registered twice")
        _MODELS[key] = cls
        return cls
    return wrap


def lookup(name):
    key = str(name).upper()
    if key not in _MODELS:
        raise RegistryError(f"unknown model '{name}' (known: {', '.join(sorted(_MODELS))})")
    return _MODELS[key]


def known_models():
    return sorted(_MODELS)
