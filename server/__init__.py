"""The prediction server behind serve.py: FastAPI on uvicorn over the same model path as
predict.py (weights, labels, engine), with uploads decoded in a process pool and the clips
of concurrent requests micro-batched into the model.

    service.py   the model, labels and engine, loaded as predict.py loads them
    uploads.py   multipart bodies streamed to a private temporary file, counted
    decode.py    the decode worker processes (the reader's sampling and views)
    batching.py  micro-batching of concurrent clips into one model call
    online.py    online TSM over a WebSocket, one camera frame at a time
    prometheus.py Prometheus counters and histograms
    app.py       create_app: the list of what the app has, errors as JSON
    predict.py   POST /v1/predict: an upload through the decoders and the model
    info.py      /healthz, /v1/labels, /v1/model, /metrics
    page.py      the page at / and its files in static/
    guard.py     what every request passes first: Host, Origin, token, body deadline
    transport.py uvicorn's settings and the connection limits it lacks

May import: utils, models, metrics, reader, engines, training, inference, jobs, data.
"""
