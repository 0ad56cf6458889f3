"""The inference core beside engines/: the one way every script gets its model
(loading.load_for_inference, for_inference), the cache of checked exports (artifacts),
and how decoding and the engine share the CPU cores (core_plan).

May import: utils, models, metrics, reader, engines."""
