"""What the server trusts: requests addressed to it by a name it answers to (DNS rebinding gets a 400), writes only
from its own page or from clients that are no web page (a cross-origin POST gets a 403), and error texts that
hold no path of the server's machine and no command-line advice.
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def _hostname(value: str) -> str | None:
    """The host part of a Host header or an origin's netloc, lower-cased, without port or IPv6 brackets."""
    try:
        parts = urlsplit("//" + value)
        return (parts.hostname or "").lower() or None
    except ValueError:
        return None


def allowed_hosts(bound: str, extra: tuple[str, ...] = ()) -> set[str]:
    """The names a server bound to `bound` answers to: loopback names, the bound address unless it is a wildcard,
    and those given with --allowed-host."""
    names = set(LOOPBACK) | {h.lower().strip("[]") for h in extra}
    if bound not in ("0.0.0.0", "::", ""):
        names.add(bound.lower().strip("[]"))
    return names


class RequestGuard:
    """Plain ASGI middleware: refuses a request whose Host is not one of `hosts` (400), and a write (any method
    but GET/HEAD/OPTIONS) that a browser marks as coming from another site (Origin not this server's, or
    Sec-Fetch-Site cross-site/same-site) (403). Clients that are no browser send neither header and pass."""

    def __init__(self, app, hosts: set[str]):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            refusal = self.refusal(scope["method"], headers)
            if refusal is not None:
                return await _send_error(send, *refusal)
        await self.app(scope, receive, send)

    def refusal(self, method: str, headers: dict) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if _hostname(host) not in self.hosts:
            return 400, (f"host {host[:100]!r} is not a name this server answers to (start it with --allowed-host "
                         "NAME to add one)")
        if method.upper() in SAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return 403, f"a write from another site ({site}) is refused; use this server's own page"
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin) if origin != "null" else None
            if parts is None or parts.netloc.lower() != host.lower():
                return 403, f"a write from another origin ({origin[:100]}) is refused; use this server's own page"
        return None


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


_ADVICE = [
    (re.compile(r"\s*\([^()]*`featstore [^`]*`[^()]*\)"), ""),          # "(run `featstore embed ...` first)"
    (re.compile(r";?\s*run `featstore [^`]*`[^;.]*"), ""),
    (re.compile(r"search --like FILE takes a file"), "upload the image as 'file' to search by it"),
    (re.compile(r"\bpass --(\w[\w-]*)"), r"give '\1'"),
    (re.compile(r"(?<![\w-])--(where|task|model|text|id|k|head)\b"), r"\1"),
]


def for_the_page(message: str, store: Path, work: Path, others: tuple[Path, ...] = ()) -> str:
    """An error text fit for HTTP: the store folder and the server's own (`work`: snapshot copies; `others`, the
    temp folder: uploads) as 'the store', a path inside the store relative to it, any other by its last part;
    command-line advice turned into what a page or API client can do."""
    folders = sorted({str(store), str(work), tempfile.gettempdir(), *map(str, others)}, key=len, reverse=True)
    pattern = "(?:" + "|".join(map(re.escape, folders)) + r")(?:/[^\s'\",;:)]*)?"

    def name(match: re.Match) -> str:
        path = Path(match.group(0))
        if path in (store, work) or (path.parent == work and path.name.startswith("featstore-snapshot-")):
            return "the store"
        return str(path.relative_to(store)) if store in path.parents else path.name

    out = re.sub(pattern, name, message)
    for old, new in _ADVICE:
        out = old.sub(new, out)
    return out.strip()
