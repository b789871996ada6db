"""Serving: a model behind a REST API and a web page (FastAPI + uvicorn), in one process or several.

`settings.py` holds every setting and limit; `server.py` binds the port and runs one process or a
supervisor of N workers; `connections.py` caps connections and times out slow requests inside
uvicorn's protocol; `guard.py` checks every request's Host and body size; `app.py` builds the app
and its routes; `payloads.py` turns request bodies into inputs, `images.py` decodes images with
every size checked first, `pool.py` runs both in separate processes for large bodies and images;
`batching.py` shares forward passes between requests; `metrics.py` counts for Prometheus across
workers; `security.py` holds the exposure and Host rules, the API key and the page's CSP;
`schemas.py` is the OpenAPI wire format; `docs.py` serves Swagger UI; `static/` is the pages.
"""
