"""Test and benchmark support: generated media and tiny configs, models with random
weights, a served model in a subprocess, headless Chromium, and raw attack clients.

Used by tests/ and bench/ only; never imported by the product (train.py, eval.py,
predict.py, serve.py and the packages they use).  It may import the product, not the
other way round.

    media.py            generated lossless videos (AVI, MP4) whose frames name themselves
    tiny.py             the tests' tiny config and a tiny dataset of generated videos
    models.py           a TSM with random weights and BN calibrated to a trained scale
    served.py           serve.py in a subprocess on a free loopback port
    browser.py          headless Chromium through Selenium
    attacks.py          raw HTTP / WebSocket clients and crafted media (bombs, y4m, ...)
    hostile.py          the soak's hostile clients, attack after attack in lanes
    serve_screenshot.py the README's picture of the served page (python -m testing.serve_screenshot)
"""
