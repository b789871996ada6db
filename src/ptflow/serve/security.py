"""What keeps the server safe to expose: the loopback rule, the Host check, the API key, the CSPs.

Limits on what a request may carry (body size, inputs, pixels, time) are Settings fields, enforced
by the code that reads the request (guard.py, connections.py, payloads.py, images.py).
"""

from __future__ import annotations

import base64
import functools
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


def check_exposure(host: str, keyed: bool, insecure: bool, allowed_hosts: frozenset[str]) -> None:
    """Refuse to serve beyond this machine without a key, unless told to, and told under which names."""
    if is_loopback(host) or keyed:
        return
    if not insecure:
        raise UsageError(f"refusing to serve on {host} without an API key: anyone who can reach it could use it; "
                         f"set --api_key or $PTFLOW_API_KEY, or pass --insecure")
    if not allowed_hosts:
        raise UsageError(f"serving on {host} without an API key also needs --allowed_hosts: the names clients use "
                         f"to reach this server (requests naming any other Host are refused), or '*' for any")


@functools.lru_cache(maxsize=1024)  # clients send the same few Host values: parse each once
def host_allowed(host_header: bytes | None, allowed: frozenset[str]) -> bool:
    """Whether a request without an API key may be answered, from its Host header.

    A page on another site can make a browser send requests to 127.0.0.1 by pointing its own name
    at that address (DNS rebinding); the browser then sends that name as the Host. Loopback names
    and addresses are always allowed (browsers resolve *.localhost themselves), other names only
    when listed.
    """
    if host_header is None:
        return False
    host = host_header.decode("latin-1").strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if "*" in allowed or host in allowed:
        return True
    return host == "localhost" or host.endswith(".localhost") or is_loopback(host)


# RFC 3986's host (a bracketed IP literal or a reg-name, which covers IPv4 too), then an optional port.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(:[0-9]{0,5})?")


def host_well_formed(host_header: bytes) -> bool:
    """Whether a Host header's value has the syntax RFC 9112 requires (400 otherwise)."""
    return _HOST.fullmatch(host_header) is not None


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
