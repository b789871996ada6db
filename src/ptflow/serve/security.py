"""What keeps the server safe to expose: the loopback rule, the API key, the page's CSP.

Limits on what a request may carry (body size, inputs, pixels) live with the code that reads it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from importlib import resources

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ptflow.errors import UsageError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to serve beyond this machine without a key, unless told to."""
    if not is_loopback(host) and not api_key and not insecure:
        raise UsageError(f"refusing to serve on {host} without an API key: anyone who can reach it could use it; "
                         f"set --api_key or $PTFLOW_API_KEY, or pass --insecure")


def bearer(api_key: str):
    scheme = HTTPBearer(auto_error=False, description="the server's --api_key")
    expected = api_key.encode()

    async def require_key(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, expected):  # constant time: no timing hints about the key
            raise HTTPException(401, "missing or wrong API key: send Authorization: Bearer <key>",
                                headers={"WWW-Authenticate": "Bearer"})

    return require_key


def page_and_csp() -> tuple[str, str]:
    """The web page, and a Content-Security-Policy that allows exactly its own inline script and style."""
    html = resources.files("ptflow.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)

    csp = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
           "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
           "frame-ancestors 'none'")
    return html, csp
