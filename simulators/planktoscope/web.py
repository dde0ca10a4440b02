"""The HTTP surface of each release profile (targets/planktoscope.md §8.1, §8.4): which requests reach a
filebrowser instance, nginx (v2.3), Caddy's redirects, Cockpit (a placeholder) or the v2026 Express backend.

One catch-all route dispatches on the *current* release, so a re-flash through the control plane changes
the surface without restarting the server.
"""

from __future__ import annotations

import datetime as dt
import html
import mimetypes
import urllib.parse
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from harness.errors import BadInput
from harness.targets.planktoscope.releases import DATA_ROOT, V2_3, V2026, release_info
from simulators.planktoscope.filebrowser import FileBrowser

if TYPE_CHECKING:
    from simulators.planktoscope.interface import PlanktoscopeSimulator

ADMIN_FS = "/admin/fs"
DATASETS = "/ps/data/browse"
INDEX_HTML = ("<!DOCTYPE html><html><head><title>PlanktoScope</title></head><body><div id=\"root\"></div>"
              "</body></html>")


def _redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=302)


def _nginx(status: int) -> Response:
    title = {404: "404 Not Found", 405: "405 Not Allowed"}.get(status, f"{status}")
    return Response(f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1>"
                    f"</center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n",
                    status_code=status, media_type="text/html")


def _express_404(method: str, path: str) -> Response:
    return Response(f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>"
                    f"\n</head>\n<body>\n<pre>Cannot {method} {html.escape(path)}</pre>\n</body>\n</html>\n",
                    status_code=404, media_type="text/html; charset=utf-8")


class Web:
    def __init__(self, sim: PlanktoscopeSimulator) -> None:
        self.sim = sim
        self._instances: dict[tuple[str, str], FileBrowser] = {}

    def instance(self, base: str) -> FileBrowser:
        device = self.sim.device
        info = release_info(device.release)
        version = info.filebrowser if base == ADMIN_FS else info.datasets_filebrowser
        assert version is not None
        key = (base, version)
        if key not in self._instances:
            root = "/" if base == ADMIN_FS else DATA_ROOT
            self._instances[key] = FileBrowser(device, base=base, root=root, version=version)
        return self._instances[key]

    def instances(self) -> list[FileBrowser]:
        return list(self._instances.values())

    def routes(self) -> list[BaseRoute]:
        methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
        return [Route("/{rest:path}", self.dispatch, methods=methods)]

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        release = self.sim.device.release
        if release == V2_3:
            return await self._nginx(request, path)
        if release == V2026:
            return await self._v2026(request, path)
        return await self._filebrowser_era(request, path)

    async def _filebrowser_era(self, request: Request, path: str) -> Response:
        for base in (ADMIN_FS, DATASETS):
            if path == base:
                return _redirect(base + "/")
            if path.startswith(base + "/"):
                return await self.instance(base).handle(request, path[len(base):])
        if path.startswith("/admin/cockpit"):
            return Response("<html><body>Cockpit login</body></html>", media_type="text/html")
        if request.method == "GET" and path == "/":
            return Response("<html><body><h1>PlanktoScope</h1></body></html>", media_type="text/html")
        return _nginx(404)

    async def _v2026(self, request: Request, path: str) -> Response:
        device = self.sim.device
        if path == DATASETS:
            return _redirect(DATASETS + "/")
        if path.startswith(DATASETS + "/"):
            return await self.instance(DATASETS).handle(request, path[len(DATASETS):])
        if path.startswith(ADMIN_FS + "/api/"):
            return self._express_fallthrough(request, path)  # Caddy passes it on to Express (§8.1)
        if path == ADMIN_FS or path.startswith(ADMIN_FS + "/"):
            return _redirect("/admin/cockpit/files")
        if path.startswith("/admin/cockpit"):
            return Response("<html><body>Cockpit login</body></html>", media_type="text/html")
        if path == "/" and request.method == "GET":
            done = device.user_setup_done()
            return _redirect("/ps/node-red-v2/dashboard" if done else "/ps/node-red-v2/dashboard/setup")
        if path == "/api/reset" and request.method == "POST":
            device.api_reset()
            return Response(b"", status_code=200)
        if path == "/api/capture" and request.method == "POST":
            return Response('{"url_jpeg":"/api/files/captures/latest.jpg"}', media_type="application/json")
        if path.startswith("/api/files/") and request.method == "GET":
            rel = urllib.parse.unquote(path[len("/api/files/"):])
            try:
                host = device.host_path(f"{DATA_ROOT}/{rel}")
            except BadInput:
                return _express_404(request.method, path)
            if host.is_file():
                return FileResponse(host, media_type=mimetypes.guess_type(host.name)[0])
        return self._express_fallthrough(request, path)

    @staticmethod
    def _express_fallthrough(request: Request, path: str) -> Response:
        if request.method == "GET":
            return Response(INDEX_HTML, media_type="text/html; charset=utf-8")
        return _express_404(request.method, path)

    async def _nginx(self, request: Request, path: str) -> Response:
        """v2.3: nginx's read-only autoindex of /home/pi/data on port 80."""
        if request.method not in ("GET", "HEAD"):
            return _nginx(405)
        rel = urllib.parse.unquote(path)
        if rel.startswith(("/admin/", "/ps/")) or rel in ("/admin", "/ps"):
            return _nginx(404)
        try:
            host = self.sim.device.host_path(DATA_ROOT + rel)
        except BadInput:
            return _nginx(404)
        if host.is_file():
            return FileResponse(host, media_type=mimetypes.guess_type(host.name)[0] or "application/octet-stream")
        if not host.is_dir():
            return _nginx(404)
        if not path.endswith("/"):
            return Response(status_code=301, headers={"Location": path + "/"})
        lines = [f"<html>\r\n<head><title>Index of {html.escape(rel)}</title></head>\r\n<body>\r\n"
                 f"<h1>Index of {html.escape(rel)}</h1><hr><pre><a href=\"../\">../</a>\r\n"]
        for child in sorted(host.iterdir(), key=lambda p: (not p.is_dir(), p.name)):
            name = child.name + ("/" if child.is_dir() else "")
            stamp = dt.datetime.fromtimestamp(child.stat().st_mtime).strftime("%d-%b-%Y %H:%M")
            size = "-" if child.is_dir() else str(child.stat().st_size)
            lines.append(f"<a href=\"{urllib.parse.quote(name)}\">{html.escape(name)}</a>"
                         f"{' ' * max(1, 51 - len(name))}{stamp} {size:>19}\r\n")
        lines.append("</pre><hr></body>\r\n</html>\r\n")
        return Response("".join(lines), media_type="text/html")
