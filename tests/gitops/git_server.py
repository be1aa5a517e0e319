"""A Git repository served over smart HTTP on loopback by git's own ``git http-backend``.

Flux's source-controller clones over http(s) or ssh only; git's CGI program does the protocol,
this module only passes requests to it (a CGI bridge), so no external host is involved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HTTP_BACKEND = Path(subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()) / "git-http-backend"


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "rtdetr-edge tests", "GIT_AUTHOR_EMAIL": "tests@rtdetr.invalid",
           "GIT_COMMITTER_NAME": "rtdetr-edge tests", "GIT_COMMITTER_EMAIL": "tests@rtdetr.invalid"}  # fmt: skip
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


class _CgiBridge(BaseHTTPRequestHandler):
    root: Path

    def _run(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        done = subprocess.run([str(HTTP_BACKEND)], input=body, env=env, capture_output=True)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _run

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        pass


class GitServer:
    """``<root>/<name>.git`` bare repositories at ``http://127.0.0.1:<port>/<name>.git``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_CgiBridge,), {"root": root})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="git-http", daemon=True).start()

    def repository(self, name: str, work: Path) -> Path:
        """A new bare repository and a clone of it at ``work`` (commit there, then :func:`push`)."""
        bare = self.root / f"{name}.git"
        git("init", "--bare", "--initial-branch=main", str(bare), cwd=self.root)
        git("config", "http.receivepack", "true", cwd=bare)  # pushes over HTTP (no auth on loopback)
        shutil.rmtree(work, ignore_errors=True)
        git("clone", f"{self.url}/{name}.git", str(work), cwd=self.root)
        git("checkout", "-B", "main", cwd=work)
        return work

    def stop(self) -> None:
        self._server.shutdown()


def commit_and_push(work: Path, message: str) -> str:
    """Commit everything in ``work`` and push it over HTTP; returns the commit id."""
    git("add", "-A", cwd=work)
    git("commit", "-m", message, cwd=work)
    git("push", "origin", "main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)
