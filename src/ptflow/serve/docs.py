"""GET /docs: Swagger UI from the installed swagger-ui-bundle package, served by ptflow itself.

Nothing comes from a CDN, so the page works where the server has no internet (most clusters),
under a Content-Security-Policy as strict as the draw-a-digit page's: scripts, styles and images
from this server only, requests to this server only. The start-up script is a file too
(static/docs.js), so no inline script needs allowing.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}
CACHE = {"Cache-Control": "public, max-age=86400"}


def swagger_ui_folder():
    """The folder of Swagger UI's files in the installed package, or None without it."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return swagger_ui_path


def add_docs(app: FastAPI) -> None:
    folder = swagger_ui_folder()
    static = resources.files("ptflow.serve").joinpath("static")
    page = static.joinpath("docs.html").read_text(encoding="utf-8")
    script = static.joinpath("docs.js").read_bytes()
    missing = JSONResponse({"detail": "Swagger UI is not installed here: pip install 'ptflow[serve]' "
                                      "(the schema itself is at /openapi.json)"}, 404)

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return HTMLResponse(page, headers=HEADERS) if folder is not None else missing

    @app.get("/docs/{name}", include_in_schema=False)
    async def docs_asset(name: str):
        if name == "docs.js":
            return Response(script, media_type="text/javascript", headers={**HEADERS, **CACHE})
        if folder is None or name not in ASSETS:  # a fixed list: no path from the request reaches the disk
            return JSONResponse({"detail": "Not Found"}, 404)
        return FileResponse(folder / name, media_type=ASSETS[name], headers={**HEADERS, **CACHE})
