"""The status page: one HTML document with its style and script inline (nothing is
fetched but ``status.json``), so that it works the same from ``shmkit serve`` at ``/``
and from ``shmkit cgi`` under any path a CGI server gives it."""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import re
from importlib import resources

__all__ = ["render_page", "content_security_policy"]


@functools.lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return resources.files(__package__ or "shmkit.dashboard").joinpath("static").joinpath(name).read_text("utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy() -> str:
    """The page may run its own inline script and style (by hash) and talk to its own
    origin; nothing else (no other script, frame, form, plugin or remote fetch)."""
    script = "\n" + _asset("app.js") + "\n"
    style = "\n" + _asset("style.css") + "\n"
    return ("default-src 'none'; "
            f"script-src {_sha256(script)}; style-src {_sha256(style)}; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


def render_page(base: str = "", refresh_ms: int = 1000) -> bytes:
    """The page; ``base`` is the URL path under which status.json lives ("" for ``shmkit
    serve``, the CGI's SCRIPT_NAME), ``refresh_ms`` how often the page polls it."""
    values = {"BASE": html.escape(base, quote=True), "REFRESH_MS": str(int(refresh_ms)),
              "STYLE": _asset("style.css"), "SCRIPT": _asset("app.js")}
    # one pass: a value is never searched for placeholders again
    doc = re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)], _asset("index.html"))
    return doc.encode("utf-8")
