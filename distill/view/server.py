"""`distill view`: a read-only local web server over dataset directories.

The standard library's threading HTTP server is enough here: one user, a handful of requests a second, and no
dependency to install on a cluster's login node. Answers are JSON (`/api/...`) or the shipped page and its
assets (`/static/...`, KaTeX, marked and highlight.js vendored: no CDN).

Read-only by construction: only GET and HEAD are answered (anything else: 405), files are opened for
reading, and no request names a file (datasets by key, rows by number; see catalog.py). Requests whose Host
is not this machine's loopback name are refused (a web page elsewhere cannot reach the server through DNS
rebinding), and every page is served with a Content-Security-Policy that allows only its own scripts: a
trace that contains `<script>` is text, never code.
"""

from __future__ import annotations

import json
import mimetypes
import sys
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from distill.view.annotate import describe
from distill.view.catalog import Catalog, Dataset, Refused, confine, funnel, inside
from distill.view.table import DatasetTable, Query, RowGroupCache

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; font-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)  # KaTeX sizes its output with style attributes: inline styles, never inline scripts
CARD_CHARS = 200_000
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
mimetypes.add_type("font/woff2", ".woff2")  # not in every system's table
mimetypes.add_type("text/javascript", ".js")


FILTERS = ("reason", "domain", "source", "part", "keep", "disagree", "q", "sort")


class BadRequest(Exception):
    pass


class Viewer:
    """The catalog and one table per dataset, shared by the request threads."""

    def __init__(self, dirs: list[Path]) -> None:
        self.catalog = Catalog(dirs)
        self.cache = RowGroupCache()
        self.tables = {key: DatasetTable(d, self.cache) for key, d in self.catalog.datasets.items()}

    def warm(self) -> None:
        """Build every table's index in the background, so the first filter does not wait for it."""

        def run() -> None:
            for table in self.tables.values():
                try:
                    _ = table.index
                except Exception as e:  # a broken directory answers its own requests with the error
                    print(f"view: {table.ds.key}: {e}", file=sys.stderr)

        threading.Thread(target=run, daemon=True, name="view-index").start()

    def dataset(self, params: dict[str, str]) -> tuple[Dataset, DatasetTable]:
        key = params.get("ds")
        if not key:
            raise BadRequest("ds= names the dataset (see /api/datasets)")
        d = self.catalog.get(key)
        table = self.tables[d.key]
        table.refresh()
        return d, table

    # --- answers -------------------------------------------------------------------------------------

    def datasets(self, _: dict[str, str]) -> Any:
        shown = [{**_summary(d), "eval": self._eval_results(d)} for d in self.catalog.datasets.values()]
        return {"roots": list(self.catalog.roots), "datasets": shown}

    def overview(self, params: dict[str, str]) -> Any:
        d, _ = self.dataset(params)
        m = d.manifest
        return {
            **_summary(d),
            "config": m.config,
            "stats": m.stats,
            "command": m.command,
            "created_at": m.created_at,
            "updated_at": m.updated_at,
            "distill_version": m.distill_version,
            "bytes": sum(s.get("bytes", 0) for s in m.shards.values()),
            "files": d.files,
            "card": self._card(d),
            "eval": self._eval_results(d),
        }

    def _card(self, d: Dataset) -> str | None:
        """The data card `distill card` wrote into the directory (README.md), shown rendered."""
        try:
            card = d.file("README.md")
        except Refused:  # a README.md that is a symlink out of the directory is not read
            return None
        return card.read_text(encoding="utf-8", errors="replace")[:CARD_CHARS] if card.is_file() else None

    def _eval_results(self, d: Dataset) -> dict[str, Any] | None:
        """For eval's scored samples (EVAL/scored): the metrics in EVAL/results.json, when EVAL was given too."""
        root = next((r for r in self.catalog.roots.values() if inside(d.path.parent, r)), None)
        if d.path.name != "scored" or root is None:
            return None
        try:
            results = confine(root, (d.path.parent / "results.json").relative_to(root).as_posix())
            blob = json.loads(results.read_text())
        except (Refused, OSError, ValueError):
            return None
        return {"metrics": blob.get("metrics"), "model": blob.get("model"), "benchmark": blob.get("benchmark")}

    def stats(self, params: dict[str, str]) -> Any:
        _, table = self.dataset(params)
        return table.stats()

    def rows(self, params: dict[str, str]) -> Any:
        _, table = self.dataset(params)
        return table.page(_query(params), _int(params, "offset", 0), _int(params, "limit", 50))

    def row(self, params: dict[str, str]) -> Any:
        d, table = self.dataset(params)
        i = _int(params, "i", 0)
        try:
            part, row = table.row(i)
        except IndexError as e:
            raise LookupError(str(e)) from None
        view = describe(part, row, d.manifest.config)
        links = self.locate(row.get("id"), row.get("sample"), exclude=(d.key, i)) if row.get("id") else []
        # reached from a filtered list: the previous and next rows of that list
        among = table.neighbours(_query(params), i) if any(params.get(k) for k in FILTERS) else None
        return {"ds": d.key, "i": i, "part": part, "rows": table.num_rows, "row": _jsonable(row), "view": view,
                "links": links, "stage": d.manifest.stage, "among": among}  # fmt: skip

    def locate(self, row_id: str, sample: int | None, exclude: tuple[str, int] | None = None) -> list[dict]:
        """The same prompt (and sample) in the other datasets: a trace's verdict, a kept trace's prompt."""
        base, _, k = row_id.partition(":")  # the SFT set names a prompt's k-th sample `id:k`
        if sample is None and k.isdigit():
            sample = int(k)
        out = []
        for key, table in self.tables.items():
            table.refresh()
            for i in table.locate(base, sample)[:20]:
                if (key, i) != exclude:
                    out.append({"ds": key, "i": i, "stage": table.ds.manifest.stage})
        return out

    def prompt(self, params: dict[str, str]) -> Any:
        """Every sample of one prompt in every dataset, with its verdict, for side-by-side reading."""
        row_id = params.get("id")
        if not row_id:
            raise BadRequest("id= names the prompt")
        base, problem, groups = row_id.split(":")[0], None, []
        for key, table in self.tables.items():
            table.refresh()
            found = table.locate(base)
            items = []
            for i in found[:64]:
                part, row = table.row(i)
                problem = problem or row.get("problem")
                view = describe(part, row, table.ds.manifest.config)
                items.append({"i": i, "part": part, "sample": row.get("sample"), "keep": row.get("keep"),
                              "reason": row.get("reject_reason") or row.get("reason"),
                              "detail": row.get("reject_detail"), "tokens": row.get("completion_tokens"),
                              "view": view})  # fmt: skip
            if items:
                groups.append({"ds": key, "stage": table.ds.manifest.stage, "rows": len(found), "items": items})
        if not groups:
            raise LookupError(f"no row has the id {row_id!r}")
        return {"id": base, "problem": problem, "groups": groups}


def _summary(d: Dataset) -> dict[str, Any]:
    m = d.manifest
    return {"key": d.key, "stage": m.stage, "record": m.record, "rows": m.rows, "shards": len(m.shards),
            "planned_shards": m.planned_shards, "complete": m.complete, "inputs": d.inputs,
            "readers": d.readers, "rows_in": m.stats.get("rows_in"), "funnel": funnel(m)}  # fmt: skip


def _int(params: dict[str, str], name: str, default: int) -> int:
    try:
        value = int(params.get(name, default))
    except ValueError:
        raise BadRequest(f"{name}= takes a whole number") from None
    if value < 0:
        raise BadRequest(f"{name}= takes a number >= 0")
    return value


def _query(params: dict[str, str]) -> Query:
    keep = params.get("keep")
    if keep not in (None, "", "1", "0"):
        raise BadRequest("keep= takes 1 or 0")
    sort = params.get("sort") or None
    if sort not in (None, "length"):
        raise BadRequest("sort= takes length")
    return Query(
        reason=params.get("reason") or None,
        domain=params.get("domain") or None,
        source=params.get("source") or None,
        part=params.get("part") or None,
        keep=None if not keep else keep == "1",
        disagree=params.get("disagree") == "1",
        q=params.get("q") or None,
        sort=sort,
        desc=params.get("order") == "desc",
    )


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if not isinstance(v, bytes) else v.decode("utf-8", "replace")) for k, v in row.items()}


ROUTES = {
    "/api/datasets": "datasets",
    "/api/overview": "overview",
    "/api/stats": "stats",
    "/api/rows": "rows",
    "/api/row": "row",
    "/api/prompt": "prompt",
}


class Handler(BaseHTTPRequestHandler):
    server_version = "distill-view"
    viewer: Viewer
    allowed_hosts: set[str]
    quiet = True

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store" if content_type.startswith("application/json") else "max-age=300")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, head: bool = False) -> None:
        body = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=str)
        self._send(status, body, "application/json; charset=utf-8", head)

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return "*" in self.allowed_hosts or name in self.allowed_hosts

    def do_GET(self, head: bool = False) -> None:
        if not self._host_ok():
            return self._json(HTTPStatus.FORBIDDEN, {"error": "this server answers only requests to its own address"})
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        params = dict(urllib.parse.parse_qsl(url.query))
        try:
            if path in ("/", "/index.html"):
                return self._static("index.html", head)
            if path.startswith("/static/"):
                return self._static(path[len("/static/") :], head)
            name = ROUTES.get(path)
            if name is None:
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"}, head)
            return self._json(HTTPStatus.OK, getattr(self.viewer, name)(params), head)
        except Refused as e:
            return self._json(HTTPStatus.FORBIDDEN, {"error": f"refused: {e}"}, head)
        except BadRequest as e:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)}, head)
        except LookupError as e:
            return self._json(HTTPStatus.NOT_FOUND, {"error": str(e).strip("'\"")}, head)
        except Exception as e:  # a broken shard: this answer fails with one line, the server goes on
            what = f"{params.get('ds', path)}: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
            print(f"view: {what}", file=sys.stderr)
            return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": what}, head)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def _static(self, name: str, head: bool) -> None:
        path = confine(STATIC.resolve(), name)
        if not path.is_file():
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such file: {name}"}, head)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind == "application/javascript":
            kind += "; charset=utf-8"
        self._send(HTTPStatus.OK, path.read_bytes(), kind, head)

    def _read_only(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_CONNECT = do_TRACE = _read_only


def make_server(dirs: list[Path], host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """The server, bound and ready (`serve_forever` to run); port 0 takes a free one."""
    viewer = Viewer(dirs)
    allowed = {"*"} if host in ("0.0.0.0", "::", "") else LOOPBACK | {host}
    handler = type("ViewHandler", (Handler,), {"viewer": viewer, "allowed_hosts": allowed})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    viewer.warm()
    return server
