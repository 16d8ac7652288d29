"""A loopback stand-in for the Hub's download endpoints, for tests that run the real
huggingface_hub code against ``HF_ENDPOINT=http://127.0.0.1:PORT``.

Serves what ``hf_hub_download`` calls: ``HEAD``/``GET /{org}/{name}/resolve/{rev}/{file}``
answered with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``, and errors carrying the
Hub's ``X-Error-Code`` headers (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo).
Plain files (an authors' checkpoint link) are served under any other path.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files
    access: str = "public"  # public | private | gated | forbidden
    token: str | None = None  # the token that unlocks a private repo


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.files: dict[str, bytes] = {}  # plain URL path -> body
        self.short: dict[str, int] = {}  # URL path -> bytes actually sent by GET
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

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

    # -------------------------------------------------------------- answers
    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = urlsplit(handler.path).path
        self.requests.append((handler.command, path))
        parts = path.strip("/").split("/")
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

    def _resolve(
        self,
        handler: BaseHTTPRequestHandler,
        repo_id: str,
        revision: str,
        filename: str,
        body: bool,
    ) -> None:
        repo = self.repos.get(repo_id)
        auth = handler.headers.get("Authorization", "")
        if repo is None:
            return self._error(handler, 404, body, code="RepoNotFound")
        if repo.access == "private" and auth != f"Bearer {repo.token}":
            if auth:
                return self._error(
                    handler, 401, body, message="Invalid credentials in Authorization header"
                )
            return self._error(handler, 401, body, code="RepoNotFound")
        if repo.access == "gated":
            return self._error(handler, 401, body, code="GatedRepo")
        if repo.access == "forbidden":
            return self._error(handler, 403, body, message="Forbidden")
        commit = repo.refs.get(revision) or (revision if revision in repo.commits else None)
        if commit is None:
            return self._error(handler, 404, body, code="RevisionNotFound")
        files = repo.commits[commit]
        if filename not in files:
            return self._error(
                handler, 404, body, code="EntryNotFound", headers={"X-Repo-Commit": commit}
            )
        content = files[filename]
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
        }
        short = self.short.get(f"{repo_id}/{filename}")
        self._send(handler, 200, content, headers, body, short)

    def _error(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bool,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        if message:
            extra["X-Error-Message"] = message
        self._send(handler, status, (message or code or "error").encode(), extra, body)

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
