"""A loopback stand-in for the Hub, for tests that run the real huggingface_hub code against
``HF_ENDPOINT=http://127.0.0.1:PORT``. Dataset repositories (``/datasets/...``,
``/api/datasets/...``, what ``datasets.load_dataset`` reads) are served like model ones.

Downloads (what ``hf_hub_download`` and ``snapshot_download`` call): ``HEAD``/``GET
/{org}/{name}/resolve/{rev}/{file}`` answered with ``X-Repo-Commit``, ``ETag`` and
``Content-Length``; ``GET /api/models/{repo}[/revision/{rev}]`` (repository info) and
``GET /api/models/{repo}/tree/{rev}`` (the file listing); errors carry the Hub's
``X-Error-Code`` headers (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo).

Uploads (what ``create_repo``, ``create_branch`` and ``upload_folder`` call with
``HF_HUB_DISABLE_XET=1``): ``POST /api/repos/create``, ``POST /api/models/{repo}/branch/{b}``,
``POST /api/validate-yaml``, ``POST /api/models/{repo}/preupload/{rev}`` (``*.safetensors``
and ``*.png`` go through LFS, the rest inline), ``POST /{repo}.git/info/lfs/objects/batch``
(basic transfer: an upload URL here), ``PUT`` of the LFS object, and the NDJSON ``POST
/api/models/{repo}/commit/{rev}``. Writes need a token listed in ``write_tokens``.

Plain files (an authors' checkpoint link) are served under any other path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO = r"(?P<repo>[^/]+/[^/]+)"
LFS_SUFFIXES = (".safetensors", ".png")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


@dataclass
class Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files
    access: str = "public"  # public | private | gated | forbidden
    token: str | None = None  # the token that unlocks a private repo


@dataclass
class Commit:
    """One commit received on the commit endpoint."""

    repo_id: str
    revision: str
    summary: str
    paths: list[str]
    lfs_paths: list[str]


class HubReplyError(Exception):
    """Raised by a route: answer with this error status instead."""

    def __init__(self, status: int, code: str | None = None, message: str | None = None) -> None:
        super().__init__(message or code or str(status))
        self.status, self.code, self.message = status, code, message


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.files: dict[str, bytes] = {}  # plain URL path -> body
        self.short: dict[str, int] = {}  # URL path -> bytes actually sent by GET
        self.requests: list[tuple[str, str]] = []
        self.write_tokens: dict[str, str] = {}  # token -> "write" | "read"
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self.commits: list[Commit] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    # -------------------------------------------------------------- content
    def add_repo(
        self, repo_id: str, files: dict[str, bytes], revision: str = "main", **options
    ) -> str:
        """Publish ``files`` as a commit on ``revision``; returns the commit hash."""
        repo = self.repos.setdefault(repo_id, Repo())
        for key, value in options.items():
            setattr(repo, key, value)
        digest = hashlib.sha1(repr((repo_id, revision, sorted(files.items()))).encode())
        commit = digest.hexdigest()
        repo.commits[commit] = dict(files)
        repo.refs[revision] = commit
        return commit

    def files_at(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.refs[revision]]

    # -------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802
                hub._answer(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub._answer(self, body=True)

            def do_POST(self) -> None:  # noqa: N802
                hub._write(self)

            def do_PUT(self) -> None:  # noqa: N802
                hub._write(self)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -------------------------------------------------------------- downloads
    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = urlsplit(handler.path).path
        self.requests.append((handler.command, path))
        # A dataset repository is served like a model one, under /datasets/ and /api/datasets/
        # (what the datasets library reads); the two kinds share one namespace here.
        if path.startswith("/datasets/"):
            path = path[len("/datasets") :]
        parts = path.strip("/").split("/")
        api = re.fullmatch(rf"/api/(?:models|datasets)/{REPO}(?P<rest>/.*)?", path)
        if api:
            recursive = parse_qs(urlsplit(handler.path).query).get("recursive", ["true"])[0]
            return self._api_get(handler, api["repo"], unquote(api["rest"] or ""),
                                 recursive=recursive.lower() == "true")  # fmt: skip
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id = f"{parts[0]}/{parts[1]}"
            revision = unquote(parts[3])
            filename = unquote("/".join(parts[4:]))
            self._resolve(handler, repo_id, revision, filename, body)
        elif path in self.files:
            # A plain link cut off mid-body: the full length is announced, less is sent.
            content = self.files[path]
            self._send(handler, 200, content, {}, body, self.short.get(path), announce=len(content))
        else:
            self._send(handler, 404, b"not found", {}, body)

    def _readable(self, handler: BaseHTTPRequestHandler, repo_id: str) -> Repo:
        """The repository, if this request may read it; else the Hub's error."""
        repo = self.repos.get(repo_id)
        auth = handler.headers.get("Authorization", "")
        if repo is None:
            raise HubReplyError(404, code="RepoNotFound")
        if repo.access == "private" and auth != f"Bearer {repo.token}":
            if auth:
                raise HubReplyError(401, message="Invalid credentials in Authorization header")
            raise HubReplyError(401, code="RepoNotFound")
        if repo.access == "gated":
            raise HubReplyError(401, code="GatedRepo")
        if repo.access == "forbidden":
            raise HubReplyError(403, message="Forbidden")
        return repo

    @staticmethod
    def _commit_of(repo: Repo, revision: str) -> str:
        commit = repo.refs.get(revision) or (revision if revision in repo.commits else None)
        if commit is None:
            raise HubReplyError(404, code="RevisionNotFound")
        return commit

    def _resolve(
        self,
        handler: BaseHTTPRequestHandler,
        repo_id: str,
        revision: str,
        filename: str,
        body: bool,
    ) -> None:
        try:
            repo = self._readable(handler, repo_id)
            commit = self._commit_of(repo, revision)
        except HubReplyError as reply:
            return self._error(handler, reply, body)
        files = repo.commits[commit]
        if filename not in files:
            return self._error(
                handler,
                HubReplyError(404, code="EntryNotFound"),
                body,
                headers={"X-Repo-Commit": commit},
            )
        content = files[filename]
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
        }
        short = self.short.get(f"{repo_id}/{filename}")
        self._send(handler, 200, content, headers, body, short)

    def _api_get(self, handler: BaseHTTPRequestHandler, repo_id: str, rest: str,
                 recursive: bool = True) -> None:  # fmt: skip
        """Repository info (``/revision/{rev}``) and the file listing (``/tree/{rev}[/dir]``;
        one level with ``recursive=false``, as the Hub lists)."""
        try:
            repo = self._readable(handler, repo_id)
            kind, _, revision = rest.strip("/").partition("/")
            revision, _, folder = revision.partition("/")
            commit = self._commit_of(repo, revision or "main")
        except HubReplyError as reply:
            return self._error(handler, reply, body=True)
        files = repo.commits[commit]
        if kind == "tree":
            return self._json(handler, 200, self._listing(files, folder.strip("/"), recursive))
        info = {
            "id": repo_id,
            "sha": commit,
            "private": repo.access == "private",
            "siblings": [{"rfilename": path} for path in sorted(files)],
        }
        self._json(handler, 200, info)

    def _listing(self, files: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
        prefix = f"{folder}/" if folder else ""
        entries: dict[str, dict] = {}
        for path, content in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            inner = path[len(prefix):].split("/")
            for depth in range(1, len(inner)):  # the folders on the way
                if recursive or depth == 1:
                    name = prefix + "/".join(inner[:depth])
                    entries.setdefault(name, {"type": "directory", "path": name,
                                              "oid": git_blob_id(name.encode()), "size": 0})
            if recursive or len(inner) == 1:
                entries[path] = self._tree_entry(path, content)
        return list(entries.values())

    @staticmethod
    def _tree_entry(path: str, content: bytes) -> dict:
        entry = {"type": "file", "path": path, "size": len(content), "oid": git_blob_id(content)}
        if path.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(content).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\n"
            pointer += f"size {len(content)}\n"
            entry["oid"] = git_blob_id(pointer.encode())
            entry["lfs"] = {"oid": sha, "size": len(content), "pointerSize": len(pointer)}
        return entry

    # -------------------------------------------------------------- uploads
    def _write(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        self.requests.append((handler.command, path))
        body = self._read_body(handler)
        routes = (
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("POST", rf"/api/models/{REPO}/branch/(?P<rev>.+)", self._create_branch),
            ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>.+)", self._preupload),
            ("POST", rf"/api/models/{REPO}/commit/(?P<rev>.+)", self._commit),
            ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self._lfs_put),
        )
        for method, pattern, route in routes:
            match = re.fullmatch(pattern, path)
            if method == handler.command and match:
                args = {key: unquote(value) for key, value in match.groupdict().items()}
                try:
                    with self._lock:
                        status, answer = route(handler, body, **args)
                except HubReplyError as reply:
                    return self._error(handler, reply, body=True)
                return self._json(handler, status, answer)
        self._send(handler, 404, b"no such endpoint", {}, True)

    def _writer_token(self, handler: BaseHTTPRequestHandler) -> str:
        """The token of a request allowed to write; the Hub's 401/403 otherwise."""
        auth = handler.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if not auth or token not in self.write_tokens:
            raise HubReplyError(401, message="Invalid credentials in Authorization header")
        if self.write_tokens[token] != "write":
            raise HubReplyError(403, message="You don't have the rights to write to this namespace")
        return token

    def _writable(self, handler: BaseHTTPRequestHandler, repo_id: str) -> Repo:
        self._writer_token(handler)
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubReplyError(404, code="RepoNotFound")
        return repo

    def _create_repo(self, handler, body: bytes) -> tuple[int, dict]:
        token = self._writer_token(handler)
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}"
        if repo_id in self.repos:  # the Hub's 409 names the repository (create_repo reads it)
            return 409, {
                "error": "You already created this model repo",
                "url": f"{self.url}/{repo_id}",
            }
        access = "private" if payload.get("visibility") == "private" else "public"
        self.add_repo(repo_id, {".gitattributes": GITATTRIBUTES}, access=access, token=token)
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def _validate_yaml(self, handler, body: bytes) -> tuple[int, dict]:
        return 200, {"errors": [], "warnings": []}

    def _create_branch(self, handler, body: bytes, repo: str, rev: str) -> tuple[int, dict]:
        target = self._writable(handler, repo)
        if rev in target.refs:
            raise HubReplyError(409, message="Reference already exists")
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        target.refs[rev] = self._commit_of(target, start)
        return 200, {}

    def _preupload(self, handler, body: bytes, repo: str, rev: str) -> tuple[int, dict]:
        target = self._writable(handler, repo)
        commit = self._commit_of(target, rev)
        files = [
            {
                "path": item["path"],
                "uploadMode": "lfs" if item["path"].endswith(LFS_SUFFIXES) else "regular",
                "shouldIgnore": False,
                "oid": None,
            }
            for item in json.loads(body)["files"]
        ]
        return 200, {"files": files, "commitOid": commit}

    def _lfs_batch(self, handler, body: bytes, repo: str) -> tuple[int, dict]:
        self._writable(handler, repo)
        objects = []
        for item in json.loads(body)["objects"]:
            entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{item['oid']}"}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}

    def _lfs_put(self, handler, body: bytes, oid: str) -> tuple[int, dict]:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubReplyError(400, message="content does not match its sha256")
        self.lfs_objects[oid] = body
        return 200, {}

    def _commit(self, handler, body: bytes, repo: str, rev: str) -> tuple[int, dict]:
        target = self._writable(handler, repo)
        parent = self._commit_of(target, rev)
        files = dict(target.commits[parent])
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        summary, paths, lfs_paths = "", [], []
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                summary = value["summary"]
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                paths.append(value["path"])
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    raise HubReplyError(
                        400, message=f"LFS object {value['oid']} was never uploaded"
                    )
                files[value["path"]] = self.lfs_objects[value["oid"]]
                paths.append(value["path"])
                lfs_paths.append(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                files.pop(value["path"], None)
        commit = hashlib.sha1(repr((repo, parent, sorted(files.items()))).encode()).hexdigest()
        target.commits[commit] = files
        target.refs[rev] = commit
        self.commits.append(Commit(repo, rev, summary, sorted(paths), sorted(lfs_paths)))
        return 200, {
            "commitUrl": f"{self.url}/{repo}/commit/{commit}",
            "commitOid": commit,
            "pullRequestUrl": None,
        }

    # -------------------------------------------------------------- plumbing
    @staticmethod
    def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    handler.rfile.readline()  # the blank line after the last chunk
                    return b"".join(chunks)
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    def _json(self, handler: BaseHTTPRequestHandler, status: int, data: object) -> None:
        headers = {"Content-Type": "application/json"}
        self._send(handler, status, json.dumps(data).encode(), headers, True)

    def _error(
        self,
        handler: BaseHTTPRequestHandler,
        reply: HubReplyError,
        body: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra = dict(headers or {})
        if reply.code:
            extra["X-Error-Code"] = reply.code
        if reply.message:
            extra["X-Error-Message"] = reply.message
        text = (reply.message or reply.code or "error").encode()
        self._send(handler, reply.status, text, extra, body)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        content: bytes,
        headers: dict[str, str],
        body: bool,
        short: int | None = None,
        announce: int | None = None,
    ) -> None:
        """Answer; with ``short``, GET sends only that many bytes (a cut-off download)."""
        sent = content if not body or short is None else content[:short]
        length = announce if announce is not None else len(sent) if body else len(content)
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        if body:
            handler.wfile.write(sent)
