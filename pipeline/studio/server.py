"""The studio's HTTP side: a Starlette app over ``Workspace`` (JSON endpoints under /api/, the
page and its assets from the package's static/ folder), and ``serve``, which runs it with
uvicorn on 127.0.0.1.

Every request is checked before any route sees it (``Guard``): the Host header must name this
server on a loopback name (a DNS-rebinding page's Host names its own domain), an Origin header
must be this server's own origin, and every POST must be ``application/json``, which a
cross-site form cannot send without a CORS preflight that this server never answers. No
response carries CORS headers.

Templates are user input: previews run in one spawned worker process, in its main thread, so
the sandbox's per-record time limit (a SIGALRM deadline, which only a main thread gets) holds
as it does in ``run``'s workers, and a preview that runs past ``PREVIEW_SECONDS`` in all is
stopped by killing the worker; the server itself never evaluates a template.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PipelineError
from .workspace import (
    MAX_ROWS_SHOWN,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    StudioError,
    Workspace,
)

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_PORT = 8765
PREVIEW_SECONDS = 30.0
MAX_BODY_BYTES = 1_000_000
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

_STATUS = {NotFound: 404, Forbidden: 403, Conflict: 409, Invalid: 400}
_KINDS: dict[str, type[StudioError]] = {c.__name__: c for c in _STATUS}


class Json(JSONResponse):
    """JSON that any data value survives (a lone surrogate in a row becomes '?')."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, default=str)
        return text.encode("utf-8", "replace")


def _error(status: int, message: str) -> Response:
    return Json({"error": message}, status_code=status)


# --------------------------------------------------------------------------- request checks


class Guard:
    """Refuses a request whose Host is not this server's loopback address (DNS rebinding),
    whose Origin is another site's, or a POST that is not ``application/json``; and marks
    every response ``nosniff`` and not to be framed by another page."""

    def __init__(self, app: ASGIApp, extra_hosts: Sequence[str] = ()) -> None:
        self.app = app
        self.names = {*LOOPBACK_NAMES, *(h.lower() for h in extra_hosts)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Cache-Control"] = "no-store"
            await send(message)

        problem = self.problem(scope)
        if problem is not None:
            status, message = problem
            await _error(status, message)(scope, receive, marked)
            return
        await self.app(scope, receive, marked)

    def problem(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        server = scope.get("server")
        port = server[1] if server else None
        host = headers.get("host", "").lower()
        allowed = {f"{name}:{port}" for name in self.names}
        if port == 80:
            allowed |= self.names
        if host not in allowed:
            return 403, (
                f"Host {host or '(none)'!r} is not this studio's address "
                f"(http://127.0.0.1:{port}/); refused"
            )
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"http://{host}":
            return 403, f"a request from {origin!r} is refused: only the studio's page may call it"
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                return 415, "send the request body as Content-Type: application/json"
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                return 413, f"the request body is over {MAX_BODY_BYTES:,} bytes"
        return None


# --------------------------------------------------------------------------- preview worker


def _worker_main(conn: Connection, source_dirs: list[Path], template_dirs: list[Path]) -> None:
    """The worker process: one Workspace (its sample caches warm across previews), one
    preview at a time, in this process's main thread."""
    try:
        workspace = Workspace(source_dirs, template_dirs)
    except Exception as exc:
        conn.send(("Invalid", f"the preview worker cannot load the catalog: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", workspace.preview(**request)))
        except StudioError as exc:
            conn.send((type(exc).__name__, str(exc)))
        except PipelineError as exc:
            conn.send(("Invalid", str(exc)))
        except Exception as exc:  # a bug of ours: say so, keep serving
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class PreviewWorker:
    """A spawned process that renders previews; restarted after a crash or a timeout."""

    def __init__(self, source_dirs: Sequence[Path], template_dirs: Sequence[Path]) -> None:
        self._dirs = ([Path(d) for d in source_dirs], [Path(d) for d in template_dirs])
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Connection | None = None

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def _ensure(self) -> Connection:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            return self._conn
        self._stop()
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main, args=(child, *self._dirs), name="studio-preview", daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        try:
            if not parent.poll(120):
                raise StudioError("the preview worker did not start within 120 s")
            kind, message = parent.recv()
        except (EOFError, OSError):
            self._stop()
            raise StudioError("the preview worker died while starting (see its log)") from None
        except StudioError:
            self._stop()
            raise
        if kind != "ready":
            self._stop()
            raise _KINDS.get(kind, StudioError)(message)
        return parent

    def preview(self, request: dict[str, Any], timeout: float = PREVIEW_SECONDS) -> dict[str, Any]:
        with self._lock:
            conn = self._ensure()
            try:
                conn.send(request)
            except OSError:
                self._stop()
                raise StudioError("the preview worker stopped; try again") from None
            if not conn.poll(timeout):
                self._stop()
                raise TimeoutError(
                    f"the preview took longer than {timeout:g} s and was stopped "
                    "(a template that loops for long on every row?)"
                )
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                self._stop()
                raise StudioError("the preview worker stopped (out of memory?)") from None
        if kind == "ok":
            return payload  # type: ignore[no-any-return]
        raise _KINDS.get(kind, StudioError)(payload)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
        self._process = self._conn = None


# --------------------------------------------------------------------------- the app


def create_app(
    source_dirs: Sequence[Path] = (),
    template_dirs: Sequence[Path] = (),
    *,
    host: str = "127.0.0.1",
) -> Starlette:
    """The studio app over the built-in catalog plus these folders (Save writes into
    ``template_dirs[0]``). ``host``: the address ``serve`` binds, accepted in Host headers
    besides the loopback names. Raises ``CatalogError`` when the catalog does not load or
    the save folder is not the user's own."""
    workspace = Workspace(source_dirs, template_dirs)
    worker = PreviewWorker(source_dirs, template_dirs)

    async def call(fn: Any, *args: Any) -> Response:
        try:
            return Json(await run_in_threadpool(fn, *args))
        except StudioError as exc:
            return _error(_STATUS.get(type(exc), 400), str(exc))
        except PipelineError as exc:
            return _error(400, str(exc))

    async def index(request: Request) -> Response:
        return _static_file("index.html")

    async def static(request: Request) -> Response:
        return _static_file(request.path_params["path"])

    async def sources(request: Request) -> Response:
        def listing() -> dict[str, Any]:
            with contextlib.suppress(Conflict):  # a broken file elsewhere: keep the last catalog
                workspace.refresh()
            return workspace.sources()

        return await call(listing)

    async def source(request: Request) -> Response:
        return await call(workspace.source_details, request.path_params["name"])

    async def template(request: Request) -> Response:
        p = request.path_params
        return await call(workspace.template, p["source"], p["template_id"])

    async def starter(request: Request) -> Response:
        return await call(workspace.starter, request.path_params["source"])

    async def preview(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        source, text = body.get("source"), body.get("yaml")
        n, seed = body.get("n", 3), body.get("seed", 0)
        if not isinstance(source, str) or not isinstance(text, str):
            return _error(400, 'give "source" and "yaml" as strings')
        if not _is_int(n) or not 1 <= n <= MAX_ROWS_SHOWN or not _is_int(seed) or seed < 0:
            return _error(400, f'"n": an integer from 1 to {MAX_ROWS_SHOWN}; "seed": 0 or more')
        if seed >= 2**64:  # a recipe's seed is at most 64 bits
            return _error(400, '"seed" must be below 2**64')
        if source not in workspace.catalog.sources:
            return _error(404, f"unknown source {source!r}")
        request_args = {"source": source, "text": text, "n": n, "seed": seed}
        try:
            return Json(await run_in_threadpool(worker.preview, request_args))
        except TimeoutError as exc:
            return Json(
                {"error": str(exc), "template_id": None, "variants": [], "lint": [], "stats": None}
            )
        except StudioError as exc:
            return _error(_STATUS.get(type(exc), 500), str(exc))

    async def save(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        source, text, file, etag = (body.get(k) for k in ("source", "yaml", "file", "etag"))
        if not isinstance(source, str) or not isinstance(text, str):
            return _error(400, 'give "source" and "yaml" as strings')
        if etag is not None and not isinstance(etag, str):
            return _error(400, '"etag" must be a string or null')
        return await call(workspace.save, source, text, file, etag)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Warm the worker while the user opens the page: the first preview is then quick.
        threading.Thread(target=_quietly, args=(worker.start,), daemon=True).start()
        try:
            yield
        finally:
            worker.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/static/{path:path}", static, methods=["GET"]),
        Route("/api/sources", sources, methods=["GET"]),
        Route("/api/sources/{name}", source, methods=["GET"]),
        Route("/api/templates/{source}/{template_id}", template, methods=["GET"]),
        Route("/api/new/{source}", starter, methods=["GET"]),
        Route("/api/preview", preview, methods=["POST"]),
        Route("/api/save", save, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.workspace = workspace
    app.state.worker = worker
    extra = [] if host in ("0.0.0.0", "::", "") else [_url_host(host)]
    app.add_middleware(Guard, extra_hosts=extra)
    return app


def _quietly(fn: Any) -> None:
    # A worker that cannot start now says why on the first preview instead.
    with contextlib.suppress(Exception):
        fn()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def _body(request: Request) -> dict[str, Any] | Response:
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            return _error(413, f"the request body is over {MAX_BODY_BYTES:,} bytes")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(400, f"the request body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _error(400, "the request body must be a JSON object")
    return body


def _static_file(rel: str) -> Response:
    """A file of the package's static/ folder, or 404: no part may be empty, '.', '..' or
    hidden, and the file (links resolved) must lie inside the folder."""
    parts = rel.split("/")
    if any(not p or p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        return _error(404, "not found")
    root = STATIC.resolve()
    path = root.joinpath(*parts)
    try:
        real = path.resolve()
    except (OSError, RuntimeError):
        return _error(404, "not found")
    if not real.is_relative_to(root) or not real.is_file():
        return _error(404, "not found")
    return FileResponse(real)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def serve(
    source_dirs: Sequence[Path] = (),
    template_dirs: Sequence[Path] = (),
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
) -> None:
    """Run the studio until Ctrl-C, printing ``instructmix studio: http://HOST:PORT/`` once the
    socket is bound (``port`` 0: a free port, and the printed one is the real one)."""
    import uvicorn  # imported here: the rest of instructmix never needs it

    app = create_app(source_dirs, template_dirs, host=host)
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise PipelineError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    real_port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else _url_host(host)
    print(f"instructmix studio: http://{shown}:{real_port}/", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
