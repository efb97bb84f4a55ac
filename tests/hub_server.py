"""A small stand-in for the Hugging Face Hub, served over HTTP on 127.0.0.1 for tests.

It implements the requests the installed huggingface_hub (and transformers / datasets through
it) actually sends, read from huggingface_hub's `hf_api.py`, `_commit_api.py`, `lfs.py` and
`file_download.py`, so a test exercises the real client code instead of a mock of `HfApi`:

- writes: `POST /api/repos/create`, `POST /api/validate-yaml` (the README front matter is parsed
  with `ModelCardData`/`DatasetCardData`, so a card the Hub would refuse is refused here),
  `POST /api/{type}s/{id}/preupload/{rev}`, the LFS batch API
  (`POST /{id}.git/info/lfs/objects/batch` + `PUT` of the object) and
  `POST /api/{type}s/{id}/commit/{rev}` (ndjson: inline base64 files and LFS pointers);
- reads: `GET /api/{type}s/{id}[/revision/{rev}]` (repo info with siblings and sha),
  `GET /api/{type}s/{id}/tree/{rev}[/{path}]`, `POST /api/{type}s/{id}/paths-info/{rev}` and
  `HEAD`/`GET /[datasets/]{id}/resolve/{rev}/{path}` with the ETag / X-Repo-Commit headers
  `hf_hub_download` checks.

Binary files (weights, parquet) are announced as LFS by `preupload`, as on the Hub. The Hub
would then take them through Xet storage, which this server does not speak: clients must set
`HF_HUB_DISABLE_XET=1`, which makes huggingface_hub use the plain LFS protocol served here.
Repo ids must be namespaced (`owner/name`); revisions are `main` or a full commit sha. Every
request is bounded (body size, socket timeout), and `stop()` ends the server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_BODY = 256 * 1024 * 1024
BINARY_SUFFIXES = (".safetensors", ".bin", ".parquet", ".arrow", ".pt", ".msgpack", ".h5")
REPO = r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
API = rf"^/api/(?P<type>model|dataset)s/{REPO}"  # /api/models/owner/name
FILES = rf"^/(?P<prefix>datasets/)?{REPO}"  # /owner/name or /datasets/owner/name
REV = r"(?P<rev>[^/]+)"
ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"{API}/preupload/{REV}$"), "preupload"),
    ("POST", re.compile(rf"{API}/commit/{REV}$"), "commit"),
    ("POST", re.compile(rf"{FILES}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$"), "lfs_put"),
    ("GET", re.compile(rf"{API}(?:/revision/{REV})?$"), "info"),
    ("GET", re.compile(rf"{API}/tree/{REV}(?:/(?P<path>.*))?$"), "tree"),
    ("POST", re.compile(rf"{API}/paths-info/{REV}$"), "paths_info"),
    ("HEAD", re.compile(rf"{FILES}/resolve/{REV}/(?P<path>.+)$"), "resolve"),
    ("GET", re.compile(rf"{FILES}/resolve/{REV}/(?P<path>.+)$"), "resolve"),
]


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    sha: str
    message: str
    files: dict[str, bytes]
    lfs: set[str]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    def at(self, revision: str) -> Commit | None:
        """The commit a revision names: `main` (the newest) or a full commit sha."""
        revision = unquote(revision)
        if revision == "main":
            return self.commits[-1] if self.commits else Commit("0" * 40, "empty", {}, set())
        return next((c for c in self.commits if c.sha == revision), None)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class FakeHub:
    """Repositories in memory, plus what tests inspect: requests seen and auth headers."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.authorizations: list[str] = []
        self.lock = threading.Lock()
        self.url = ""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------------ direct access for tests

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def add_commit(
        self, repo_id: str, files: dict[str, bytes], repo_type: str = "model", message: str = ""
    ) -> str:
        """Create the repo if needed and commit `files` on top of main; returns the sha."""
        with self.lock:
            repo = self.repos.setdefault(
                (repo_type, repo_id), Repo(repo_type, repo_id, private=False)
            )
            base = repo.at("main")
            merged = {**base.files, **files}
            lfs = {p for p in base.lfs if p not in files}
            lfs |= {p for p in files if p.endswith(BINARY_SUFFIXES)}
            for path in lfs:
                self.lfs_objects[hashlib.sha256(merged[path]).hexdigest()] = merged[path]
            return self._commit(repo, message or "add files", merged, lfs)

    def _commit(self, repo: Repo, message: str, files: dict[str, bytes], lfs: set[str]) -> str:
        digest = hashlib.sha1()
        digest.update((repo.commits[-1].sha if repo.commits else "").encode())
        digest.update(message.encode())
        for path in sorted(files):
            digest.update(path.encode() + git_blob_oid(files[path]).encode())
        sha = digest.hexdigest()
        repo.commits.append(Commit(sha, message, files, lfs))
        return sha

    # ------------------------------------------------------------------ handlers

    def check_write_token(self, headers: Any) -> None:
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def find(self, repo_type: str, repo_id: str, revision: str = "main") -> tuple[Repo, Commit]:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        commit = repo.at(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo, commit

    def create_repo(self, req: Request) -> Reply:
        self.check_write_token(req.headers)
        body = req.json()
        repo_type = body.get("type") or "model"
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else ""
        if not repo_id:
            raise HubError(400, "repo ids must be namespaced (owner/name) on this test server")
        url = self.repo_url(repo_type, repo_id)
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return Reply(409, {"error": "You already created this repo", "url": url})
            private = body.get("visibility") == "private" or bool(body.get("private"))
            self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
        return Reply(200, {"url": url, "name": repo_id})

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    def validate_yaml(self, req: Request) -> Reply:
        """Refuse a README whose metadata huggingface_hub's own card classes cannot parse."""
        import yaml
        from huggingface_hub import DatasetCardData, ModelCardData

        body = req.json()
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", body.get("content", ""), re.S)
        if match is None:
            return Reply(200, {"errors": [], "warnings": [{"message": "empty metadata"}]})
        try:
            meta = yaml.safe_load(match.group(1)) or {}
            cls = DatasetCardData if body.get("repoType") == "dataset" else ModelCardData
            cls(**meta)
        except Exception as exc:
            return Reply(400, {"errors": [{"message": str(exc)}]})
        return Reply(200, {"errors": [], "warnings": []})

    def preupload(self, req: Request) -> Reply:
        self.check_write_token(req.headers)
        self.find(req.group("type"), req.group("repo"), req.group("rev"))
        files = []
        for entry in req.json()["files"]:
            sample = base64.b64decode(entry["sample"])
            binary = entry["path"].endswith(BINARY_SUFFIXES) or b"\0" in sample
            mode = "lfs" if binary else "regular"
            files.append({"path": entry["path"], "uploadMode": mode, "shouldIgnore": False})
        return Reply(200, {"files": files, "commitOid": None})

    def lfs_batch(self, req: Request) -> Reply:
        self.check_write_token(req.headers)
        repo_type = "dataset" if req.group("prefix") else "model"
        self.find(repo_type, req.group("repo"))
        objects = []
        for obj in req.json()["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        return Reply(200, {"transfer": "basic", "objects": objects})

    def lfs_put(self, req: Request) -> Reply:
        oid = req.group("oid")
        if hashlib.sha256(req.body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its sha256")
        with self.lock:
            self.lfs_objects[oid] = req.body
        return Reply(200, {})

    def commit(self, req: Request) -> Reply:
        self.check_write_token(req.headers)
        repo, base = self.find(req.group("type"), req.group("repo"), req.group("rev"))
        files, lfs, message = dict(base.files), set(base.lfs), ""
        for line in req.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
            elif key == "lfsFile":
                content = self.lfs_objects.get(value["oid"])
                if content is None or len(content) != value["size"]:
                    raise HubError(400, f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = content
                lfs.add(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                prefix = value["path"].rstrip("/")
                for path in [p for p in files if p == prefix or p.startswith(prefix + "/")]:
                    files.pop(path)
                    lfs.discard(path)
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        with self.lock:
            sha = self._commit(repo, message, files, lfs)
        url = f"{self.repo_url(repo.repo_type, repo.repo_id)}/commit/{sha}"
        return Reply(200, {"commitUrl": url, "commitOid": sha, "pullRequestUrl": None})

    def info(self, req: Request) -> Reply:
        repo, commit = self.find(req.group("type"), req.group("repo"), req.group("rev") or "main")
        return Reply(
            200,
            {
                "id": repo.repo_id,
                "_id": repo.repo_id,
                "sha": commit.sha,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
                "lastModified": "2026-01-01T00:00:00.000Z",
                "cardData": {},
            },
        )

    def entry(self, commit: Commit, path: str) -> dict[str, Any]:
        if path in commit.files:
            content = commit.files[path]
            item: dict[str, Any] = {
                "type": "file",
                "oid": git_blob_oid(content),
                "size": len(content),
                "path": path,
            }
            if path in commit.lfs:
                sha = hashlib.sha256(content).hexdigest()
                item["lfs"] = {"oid": sha, "size": len(content), "pointerSize": 134}
            return item
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path}

    def folders(self, commit: Commit) -> set[str]:
        return {
            "/".join(p.split("/")[:i]) for p in commit.files for i in range(1, p.count("/") + 1)
        }

    def tree(self, req: Request) -> Reply:
        _, commit = self.find(req.group("type"), req.group("repo"), req.group("rev"))
        root = unquote(req.group("path") or "").strip("/")
        recursive = req.query.get("recursive", ["False"])[0].lower() == "true"
        folders = self.folders(commit)
        if root and root not in folders:
            raise HubError(404, f"{root} does not exist", "EntryNotFound")
        prefix = f"{root}/" if root else ""
        names = [n for n in sorted(set(commit.files) | folders) if n.startswith(prefix)]
        if not recursive:
            names = [n for n in names if "/" not in n[len(prefix) :]]
        return Reply(200, [self.entry(commit, n) for n in names])

    def paths_info(self, req: Request) -> Reply:
        _, commit = self.find(req.group("type"), req.group("repo"), req.group("rev"))
        form = parse_qs(req.body.decode())
        known = set(commit.files) | self.folders(commit)
        paths = [p.strip("/") for p in form.get("paths", [])]
        return Reply(200, [self.entry(commit, p) for p in paths if p in known])

    def resolve(self, req: Request) -> Reply:
        repo_type = "dataset" if req.group("prefix") else "model"
        _, commit = self.find(repo_type, req.group("repo"), req.group("rev"))
        path = unquote(req.group("path"))
        if path not in commit.files:
            raise HubError(404, f"{path} does not exist at {commit.sha}", "EntryNotFound")
        content = commit.files[path]
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_oid(content)}"'}
        if path in commit.lfs:
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(content).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(content))
        return Reply(200, content, headers)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    match: re.Match[str]

    def json(self) -> Any:
        return json.loads(self.body or b"{}")

    def group(self, name: str) -> str:
        return self.match.group(name)


@dataclass
class Reply:
    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds a connection may sit idle or half-sent

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tests read hub.requests instead

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise HubError(413, "request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            raise HubError(413, "request body too large")
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        hub = self.hub
        parts = urlsplit(self.path)
        path = parts.path
        with hub.lock:
            hub.requests.append((method, path))
            if self.headers.get("authorization"):
                hub.authorizations.append(self.headers["authorization"])
        try:
            body = self._read_body() if method in ("POST", "PUT") else b""
            for verb, pattern, name in ROUTES:
                match = pattern.match(path)
                if verb == method and match:
                    query = parse_qs(parts.query)
                    request = Request(method, path, query, self.headers, body, match)
                    reply = getattr(hub, name)(request)
                    break
            else:
                with hub.lock:
                    hub.unhandled.append((method, path))
                raise HubError(404, f"not served by the test hub: {method} {path}")
        except HubError as exc:
            headers = {"X-Error-Code": exc.code} if exc.code else {}
            headers["X-Error-Message"] = exc.message
            reply = Reply(exc.status, {"error": exc.message}, headers)
        except Exception as exc:  # a bug here must show up as a failing request, not a hang
            reply = Reply(500, {"error": f"{type(exc).__name__}: {exc}"})
        self._send(method, reply)

    def _send(self, method: str, reply: Reply) -> None:
        raw = reply.payload
        if not isinstance(raw, bytes):
            raw = json.dumps(raw).encode()
            reply.headers.setdefault("Content-Type", "application/json")
        self.send_response(reply.status)
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(raw)


def hub_env(hub: FakeHub, home: str, token: str | None = None) -> dict[str, str]:
    """Environment for a subprocess that should talk to `hub` and nothing else."""
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": home,
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "10",
        "HF_HUB_DOWNLOAD_TIMEOUT": "30",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    if token is not None:
        env["HF_TOKEN"] = token
    return env
