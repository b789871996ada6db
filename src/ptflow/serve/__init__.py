"""Serving: a model behind a REST API and a web page (FastAPI + uvicorn).

`app.py` builds the app, `payloads.py` turns request bodies into inputs, `batching.py` shares
forward passes between requests, `metrics.py` counts for Prometheus, `security.py` holds the
exposure rule, the API key and the page's CSP; `static/` is the page.
"""
