"""One filebrowser instance (v2.24.2 / v2.27.0 / v2.44.2) over the simulated disk (targets/planktoscope.md
§8.2, §8.3). The PlanktoScope runs it with ``noauth``: any login gets user 1's token.

Routes, relative to the instance base (``/admin/fs`` rooted at ``/``, ``/ps/data/browse`` rooted at
``/home/pi/data``): ``POST /api/login``, ``POST /api/renew``, ``GET|POST|PUT|DELETE|PATCH /api/resources/<p>``,
``GET /api/raw/<p>``, ``GET /api/usage/<p>``, ``GET /health``; the rest of ``/api/*`` answers 404.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import io
import json
import mimetypes
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from harness.errors import BadInput
from simulators.planktoscope.device import DeviceFault, PlanktoscopeDevice

TOKEN_LIFETIME_S = 2 * 3600
RENEW_BELOW_S = 3600
TEXT_LIMIT = 10 * 1024 * 1024
GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27
ALGOS = {"zip": ".zip", "true": ".zip", "": ".zip", "tar": ".tar", "targz": ".tar.gz", "tarbz2": ".tar.bz2",
         "tarxz": ".tar.xz", "tarlz4": ".tar.lz4", "tarsz": ".tar.sz"}
CHECKSUMS = ("md5", "sha1", "sha256", "sha512")
REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 500: "Internal Server Error"}
_TEXT_EXT = {".json", ".yml", ".yaml", ".txt", ".md", ".csv", ".tsv", ".log", ".py", ".sh", ".js", ".html",
             ".xml", ".conf", ".ini"}


def status_text(code: int, headers: dict[str, str] | None = None) -> Response:
    """filebrowser's plain status body: ``<code> <reason>`` and LF."""
    return Response(f"{code} {REASONS.get(code, '')}\n", status_code=code,
                    media_type="text/plain; charset=utf-8",
                    headers={"X-Content-Type-Options": "nosniff", **(headers or {})})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Version:
    name: str
    query_token: bool  # ?auth= accepted (not in v2.44.2)
    resolution: bool  # images carry {width, height}
    renew_header: bool  # /api/renew answers X-Renew-Token: false
    file_mode: int
    dir_mode: int


VERSIONS = {
    "v2.24.2": Version("v2.24.2", True, False, False, 0o755, 0o755),
    "v2.27.0": Version("v2.27.0", True, True, True, 0o755, 0o755),
    "v2.44.2": Version("v2.44.2", False, True, True, 0o640, 0o750),
}


class FileBrowser:
    def __init__(self, device: PlanktoscopeDevice, *, base: str, root: str, version: str) -> None:
        self.device = device
        self.base = base.rstrip("/")
        self.root = root.rstrip("/") or "/"
        self.version = VERSIONS[version]
        self._issued: set[str] = set()
        self._revoked: set[str] = set()  # the "expire_tokens" fault: every token so far stops working

    # -- tokens ----------------------------------------------------------------------------------------

    def issue(self) -> str:
        now = int(self.device.now())
        user: dict[str, Any] = {"id": 1, "locale": "en", "viewMode": "mosaic", "singleClick": False,
                                "perm": {"admin": True, "execute": True, "create": True, "rename": True,
                                         "modify": True, "delete": True, "share": True, "download": True},
                                "commands": [], "lockPassword": True, "hideDotfiles": False,
                                "dateFormat": False}
        if self.version.name == "v2.44.2":
            user.update({"username": "admin", "aceEditorTheme": ""})
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = _b64(json.dumps({"user": user, "iss": "File Browser", "iat": now,
                                   "exp": now + TOKEN_LIFETIME_S}, separators=(",", ":")).encode())
        sig = hmac.new(self.device.jwt_secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{header}.{payload}.{_b64(sig)}"
        self._issued.add(token)
        self._revoked.discard(token)  # the same claims in the same second sign to the same token again
        return token

    def expire_all(self) -> None:
        self._revoked |= self._issued

    def _claims(self, token: str) -> dict[str, Any] | None:
        try:
            header, payload, sig = token.split(".")
            expected = hmac.new(self.device.jwt_secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(sig)):
                return None
            claims = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        now = self.device.now()
        if claims.get("iss") != "File Browser" or not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            return None
        if token in self._revoked:
            return None
        return claims

    def _token(self, request: Request) -> str | None:
        """Where filebrowser looks, in order; a value counts only with exactly two dots (§8.2)."""
        candidates = [request.headers.get("x-auth", "")]
        if self.version.query_token:
            candidates.append(request.query_params.get("auth", ""))
        if request.method == "GET":
            candidates.append(request.cookies.get("auth", ""))
        return next((c for c in candidates if c.count(".") == 2), None)

    # -- dispatch --------------------------------------------------------------------------------------

    async def handle(self, request: Request, rest: str) -> Response:
        """``rest`` is the path after the instance base, with its leading slash."""
        if rest == "/health":
            return Response('{"status":"OK"}', media_type="application/json")
        if rest == "/api/login":
            await request.body()  # noauth: the body is ignored
            return Response(self.issue(), media_type="text/plain")
        if not rest.startswith("/api/"):
            return _spa()
        token = self._token(request)
        claims = self._claims(token) if token else None
        if claims is None:
            return status_text(401)
        renew = {"X-Renew-Token": "true"} if claims["exp"] - self.device.now() < RENEW_BELOW_S else {}
        if rest == "/api/renew" and request.method == "POST":
            headers = {"X-Renew-Token": "false"} if self.version.renew_header else {}
            return Response(self.issue(), media_type="text/plain", headers=headers)
        for prefix, handler in (("/api/resources", self._resources), ("/api/raw", self._raw),
                                ("/api/usage", self._usage)):
            if rest == prefix or rest.startswith(prefix + "/"):
                try:
                    response = await handler(request, rest[len(prefix):] or "/")
                except BadInput:
                    response = status_text(403)
                except DeviceFault:
                    response = status_text(500)
                response.headers.update(renew)
                return response
        return status_text(404)

    # -- paths -----------------------------------------------------------------------------------------

    def _device_path(self, inner: str) -> str:
        inner = "/" + urllib.parse.unquote(inner).lstrip("/")
        return (self.root.rstrip("/") + inner) if self.root != "/" else inner

    def _info(self, host: Path, inner: str, *, header: bool) -> dict[str, Any]:
        st = host.lstat()
        is_link = stat.S_ISLNK(st.st_mode)
        if is_link:
            with contextlib.suppress(OSError):
                st = host.stat()
        is_dir = stat.S_ISDIR(st.st_mode)
        mode = stat.S_IMODE(st.st_mode) | (GO_DIR if is_dir else 0) | (GO_SYMLINK if is_link else 0)
        modified = dt.datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=dt.UTC).isoformat()
        name = host.name if inner.strip("/") else ""
        info: dict[str, Any] = {"path": inner, "name": name, "size": 4096 if is_dir else st.st_size,
                                "extension": "" if is_dir else os.path.splitext(host.name)[1],
                                "modified": modified, "mode": mode, "isDir": is_dir, "isSymlink": is_link,
                                "type": "" if is_dir else self._type(host, header)}
        if info["type"] == "image" and self.version.resolution:
            size = _jpeg_size(host) if host.suffix.lower() in (".jpg", ".jpeg") else None
            if size:
                info["resolution"] = {"width": size[0], "height": size[1]}
        return info

    @staticmethod
    def _type(host: Path, header: bool) -> str:
        if not host.exists():
            return "invalid_link"
        mime, _ = mimetypes.guess_type(host.name)
        ext = host.suffix.lower()
        if mime:
            for prefix, kind in (("image/", "image"), ("video/", "video"), ("audio/", "audio")):
                if mime.startswith(prefix):
                    return kind
            if mime == "application/pdf":
                return "pdf"
        if ext in _TEXT_EXT or (mime or "").startswith("text/"):
            return "text" if host.stat().st_size <= TEXT_LIMIT else "blob"
        if not header:
            return "blob"
        with open(host, "rb") as f:
            head = f.read(512)
        try:
            head.decode("utf-8")
            binary = b"\0" in head
        except UnicodeDecodeError:
            binary = True
        return "blob" if binary or host.stat().st_size > TEXT_LIMIT else "text"

    # -- handlers --------------------------------------------------------------------------------------

    async def _resources(self, request: Request, inner: str) -> Response:
        method = request.method
        device_path = self._device_path(inner)
        host = self.device.host_path(device_path)
        if method == "GET":
            return self._get_resource(request, host, inner)
        if method == "POST":
            return await self._post(request, host, device_path, inner)
        if method == "PUT":
            if inner.endswith("/"):
                return status_text(405)
            if not host.is_file():
                return status_text(404)
            return await self._write_body(request, host, device_path)
        if method == "DELETE":
            if device_path.rstrip("/") in ("", self.root.rstrip("/")):
                return status_text(403)
            if not self.device.delete(device_path.rstrip("/") or "/", writer="filebrowser"):
                return status_text(404)
            return status_text(200)
        if method == "PATCH":
            return self._patch(request, host, device_path)
        return status_text(405)

    def _get_resource(self, request: Request, host: Path, inner: str) -> Response:
        if not host.exists() and not host.is_symlink():
            return status_text(404)
        info = self._info(host, inner, header=True)
        if info["isDir"]:
            items = []
            for child in sorted(host.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower())):
                child_inner = inner.rstrip("/") + "/" + child.name
                items.append(self._info(child, child_inner, header=False))
            info.update({"items": items, "numDirs": sum(1 for i in items if i["isDir"]),
                         "numFiles": sum(1 for i in items if not i["isDir"]),
                         "sorting": {"by": "name", "asc": False}})
            return _json(info)
        algo = request.query_params.get("checksum")
        if algo is not None:
            if algo not in CHECKSUMS:
                return status_text(400)
            digest = hashlib.new(algo)
            with open(host, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            info["checksums"] = {algo: digest.hexdigest()}
        elif info["type"] == "text":
            content = host.read_bytes().decode("utf-8", errors="replace")
            if content:
                info["content"] = content
        return _json(info)

    async def _post(self, request: Request, host: Path, device_path: str, inner: str) -> Response:
        if inner.endswith("/"):
            if host.exists() and not host.is_dir():
                return status_text(409)
            host.mkdir(parents=True, exist_ok=True, mode=self.version.dir_mode)
            self.device.audit("filebrowser", "mkdir", device_path, 0)
            return status_text(200)
        override = request.query_params.get("override") == "true"
        if host.exists() and not override:
            return status_text(409)
        if host.is_dir():
            return status_text(409)
        return await self._write_body(request, host, device_path)

    async def _write_body(self, request: Request, host: Path, device_path: str) -> Response:
        device = self.device
        if device.disk_full:
            await request.body()
            with contextlib.suppress(FileNotFoundError):
                host.unlink()  # on a write error the target is removed
            return status_text(500)
        parent = host.parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=self.version.dir_mode)
        existed = host.exists()
        size = 0
        try:
            with open(host, "wb") as f:  # truncate in place: the inode keeps its mode and owner
                async for chunk in request.stream():
                    f.write(chunk)
                    size += len(chunk)
        except Exception:
            with contextlib.suppress(FileNotFoundError):
                host.unlink()
            raise
        if not existed:
            os.chmod(host, self.version.file_mode)
            device.set_owner(device_path, "root")
        device.audit("filebrowser", "write", device_path, size)
        st = host.stat()
        return status_text(200, {"ETag": f'"{st.st_mtime_ns:x}{st.st_size:x}"'})

    def _patch(self, request: Request, host: Path, device_path: str) -> Response:
        action = request.query_params.get("action", "")
        dest_inner = urllib.parse.unquote(request.query_params.get("destination", ""))
        if action not in ("copy", "rename"):
            return status_text(400)
        dest_path = self._device_path(dest_inner)
        if device_path.rstrip("/") in ("", "/") or dest_path.rstrip("/") in ("", "/"):
            return status_text(403)
        if not host.exists():
            return status_text(404)
        if (dest_path + "/").startswith(device_path.rstrip("/") + "/"):
            return status_text(400)
        dest = self.device.host_path(dest_path)
        if dest.exists():
            if request.query_params.get("rename") == "true":
                stem, ext = os.path.splitext(dest.name)
                n = 1
                while (dest.parent / f"{stem}({n}){ext}").exists():
                    n += 1
                dest = dest.parent / f"{stem}({n}){ext}"
            elif request.query_params.get("override") != "true":
                return status_text(409)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if action == "copy":
            if host.is_dir():
                shutil.copytree(host, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(host, dest)
        else:
            os.replace(host, dest)
        self.device.audit("filebrowser", action, self.device.device_path(dest), 0)
        return status_text(200)

    async def _raw(self, request: Request, inner: str) -> Response:
        if request.method != "GET":
            return status_text(405)
        host = self.device.host_path(self._device_path(inner))
        if not host.exists():
            return status_text(404)
        if host.is_file():
            disposition = "inline" if request.query_params.get("inline") == "true" else "attachment"
            headers = {"Content-Disposition": f"{disposition}; filename*=utf-8''{urllib.parse.quote(host.name)}",
                       "Cache-Control": "private", "Content-Security-Policy": "script-src 'none';"}
            return FileResponse(host, headers=headers, media_type=mimetypes.guess_type(host.name)[0])
        algo = request.query_params.get("algo", "")
        if algo not in ALGOS or algo in ("tarlz4", "tarsz"):
            return status_text(500)  # lz4 and snappy are not modelled (docs); unknown algos are a 500
        names = [n for n in request.query_params.get("files", "").split(",") if n]
        selected = [host / urllib.parse.unquote(n) for n in names] if names else [host]
        for path in selected:
            self.device.host_path(self.device.device_path(path))  # refuses anything leaving the disk
        tmp = tempfile.NamedTemporaryFile(prefix=".fb-archive-", dir=self.device.state_dir, delete=False)
        tmp.close()
        _archive(Path(tmp.name), algo, host, selected)
        name = ("_" if len(names) > 1 else "") + (host.name or "filebrowser") + ALGOS[algo]
        headers = {"Content-Disposition": f"attachment; filename*=utf-8''{urllib.parse.quote(name)}"}
        return FileResponse(tmp.name, headers=headers, media_type="application/octet-stream",
                            background=BackgroundTask(os.unlink, tmp.name))

    async def _usage(self, request: Request, inner: str) -> Response:
        host = self.device.host_path(self._device_path(inner))
        if not host.exists():
            return status_text(404)
        if host.is_file():
            return _json({"total": 0, "used": 0})
        usage = shutil.disk_usage(host)
        return _json({"total": usage.total, "used": usage.used})


def _walk(base: Path, selected: list[Path]) -> list[tuple[Path, str]]:
    """(host path, archive name relative to ``base``) of regular files and dirs, recursive."""
    out: list[tuple[Path, str]] = []
    for top in selected:
        items = [top] + sorted(top.rglob("*")) if top.is_dir() else [top]
        for path in items:
            if path == base or not (path.is_file() or path.is_dir()) or path.is_symlink():
                continue
            out.append((path, path.relative_to(base).as_posix()))
    return out


def _archive(dest: Path, algo: str, base: Path, selected: list[Path]) -> None:
    entries = _walk(base, selected)
    if ALGOS[algo] == ".zip":
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            for path, name in entries:
                zf.write(path, name + ("/" if path.is_dir() else ""))
        return
    mode = {"tar": "w", "targz": "w:gz", "tarbz2": "w:bz2", "tarxz": "w:xz"}[algo]
    with tarfile.open(dest, mode) as tf:  # type: ignore[call-overload]
        for path, name in entries:
            tf.add(path, name, recursive=False)


def _json(doc: Any) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")), media_type="application/json; charset=utf-8")


def _spa() -> Response:
    return Response("<!DOCTYPE html><html><head><title>File Browser</title></head><body>"
                    "<div id=app></div></body></html>", media_type="text/html; charset=utf-8")


def _jpeg_size(path: Path) -> tuple[int, int] | None:
    """Width and height from the first SOF marker."""
    data = io.BytesIO(path.read_bytes()[:1 << 20])
    if data.read(2) != b"\xff\xd8":
        return None
    while True:
        marker = data.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        length = int.from_bytes(data.read(2), "big")
        if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
            seg = data.read(length - 2)
            return int.from_bytes(seg[3:5], "big"), int.from_bytes(seg[1:3], "big")
        data.seek(length - 2, io.SEEK_CUR)
