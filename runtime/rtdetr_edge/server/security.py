"""TLS and bearer-token authentication for the serving endpoint (opt-in), reloaded in place.

Certificates and tokens come from files, in Kubernetes from Secret volumes (cert-manager's
``tls.crt``/``tls.key``/``ca.crt``): the kubelet swaps a Secret's files atomically when it
changes, and :class:`CredentialReloader` notices the new contents within its polling interval and
loads them into the live HTTP :class:`ssl.SSLContext` (new connections get the new certificate;
open ones keep theirs) and hands gRPC a new certificate configuration for its next handshake. A
file that does not load (a key that does not match its certificate, a half-written file) is
logged and counted, and the previous credentials keep serving: a bad rotation never takes the
endpoint down.

``client_ca`` turns on mutual TLS (a client certificate signed by that CA is required on the
serving ports); tokens are checked on every route but health and metrics (:data:`OPEN_ROUTES`),
which the kubelet and Prometheus call without credentials (and which also answer on the plain
management port, so probes and scrapes work under mutual TLS too).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtdetr_edge.errors import UnauthorizedError

log = logging.getLogger(__name__)

OPEN_ROUTES = frozenset({"live", "ready", "metrics", "repository_index"})
"""Routes answered without a token: what probes, scrapers and the operator (following a model
swap) call."""
DEFAULT_RELOAD_SECONDS = 10.0
"""How often the credential files are re-read (the kubelet updates Secret volumes within ~1 min)."""


@dataclass(frozen=True)
class SecurityOptions:
    """``serve``'s TLS and authentication files; all None: plain HTTP, no authentication."""

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    client_ca_file: Path | None = None
    """Require client certificates signed by this CA (mutual TLS); needs the certificate and key."""
    token_file: Path | None = None
    """Accepted bearer tokens, one per line (``#`` comments and blank lines ignored)."""
    reload_seconds: float = DEFAULT_RELOAD_SECONDS

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert-file and --tls-key-file)")
        if self.client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("client certificates (--tls-client-ca-file) need TLS: give --tls-cert-file and --tls-key-file")

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def enabled(self) -> bool:
        return self.tls or self.token_file is not None

    def files(self) -> tuple[Path, ...]:
        return tuple(f for f in (self.tls_cert_file, self.tls_key_file, self.client_ca_file, self.token_file) if f)


def parse_tokens(text: str) -> frozenset[str]:
    """The tokens of a token file: one per line, ``#`` comments and blank lines ignored. Pure."""
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (scheme case-insensitive). Pure."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def token_allowed(token: str | None, allowed: frozenset[str]) -> bool:
    """Constant-time membership (compares digests, so no token's length or prefix leaks). Pure."""
    if token is None:
        return False
    digest = hashlib.sha256(token.encode()).digest()
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(digest, hashlib.sha256(candidate.encode()).digest())
    return found


class CredentialReloader:
    """The live credentials: an HTTP SSLContext, gRPC's certificate configuration, the tokens;
    re-read from their files by :meth:`check` (:meth:`watch` calls it every ``reload_seconds``)."""

    def __init__(self, options: SecurityOptions, on_reload: Callable[[str], None] | None = None) -> None:
        self.options = options
        self._on_reload = on_reload or (lambda result: None)
        self._seen: dict[Path, bytes] = {}
        self._lock = threading.Lock()
        self._grpc_pending: Any = None
        self.tokens: frozenset[str] | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self.grpc_config: Any = None
        self._load(initial=True)

    # --- what the servers use -------------------------------------------------------------

    def require_token(self, authorization: str | None) -> None:
        """Raise :class:`UnauthorizedError` unless tokens are off or the header carries an allowed one."""
        tokens = self.tokens
        if tokens is None:
            return
        token = bearer_token(authorization)
        if token is None:
            raise UnauthorizedError("this endpoint needs 'Authorization: Bearer <token>'")
        if not token_allowed(token, tokens):
            raise UnauthorizedError("the bearer token is not accepted here")

    def grpc_credentials(self) -> Any:
        """gRPC server credentials that pick up reloaded certificates at the next handshake."""
        import grpc

        return grpc.dynamic_ssl_server_credentials(
            self.grpc_config, self._next_grpc_config, require_client_authentication=self.options.client_ca_file is not None
        )

    def _next_grpc_config(self) -> Any:
        with self._lock:
            config, self._grpc_pending = self._grpc_pending, None
        return config

    # --- reloading ------------------------------------------------------------------------

    def check(self) -> bool:
        """Reload if any file changed; True when new credentials were loaded."""
        try:
            contents = {path: path.read_bytes() for path in self.options.files()}
        except OSError as error:
            log.error("credential files unreadable, keeping the loaded ones: %s", error)
            self._on_reload("failed")
            return False
        if contents == self._seen:
            return False
        return self._load(contents=contents)

    def _load(self, initial: bool = False, contents: dict[Path, bytes] | None = None) -> bool:
        options = self.options
        contents = contents if contents is not None else {path: path.read_bytes() for path in options.files()}
        try:
            tokens = parse_tokens(contents[options.token_file].decode()) if options.token_file else None
            context = grpc_config = None
            if options.tls_cert_file is not None and options.tls_key_file is not None:
                # Tried on a scratch context first: a key that does not match its certificate must
                # not reach the live one half-loaded.
                self._new_context().load_cert_chain(options.tls_cert_file, options.tls_key_file)
                context = self._new_context() if initial else self.ssl_context
                assert context is not None
                # Into the live context (the listener keeps it): the next handshake uses it.
                context.load_cert_chain(options.tls_cert_file, options.tls_key_file)
                if options.client_ca_file is not None:
                    # Adds to the trusted set: a CA removed from the file stays trusted for HTTP
                    # until the process restarts (gRPC's configuration is replaced whole).
                    context.load_verify_locations(cadata=contents[options.client_ca_file].decode())
                grpc_config = self._grpc_certificate_config(contents)
        except (ssl.SSLError, OSError, ValueError, UnicodeDecodeError) as error:
            if initial:
                raise ValueError(f"TLS/authentication files do not load: {error}") from error
            log.error("new credentials do not load, keeping the previous ones: %s", error)
            self._on_reload("failed")
            self._seen = contents  # once per change, not every poll
            return False
        with self._lock:
            self.tokens = tokens
            self.ssl_context = context
            if grpc_config is not None:
                if not initial:
                    self._grpc_pending = grpc_config
                self.grpc_config = grpc_config
        self._seen = contents
        if not initial:
            log.info("reloaded TLS/authentication files (%s)", ", ".join(str(p) for p in options.files()))
            self._on_reload("loaded")
        return True

    def _new_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2+, the library's ciphers
        context.verify_mode = ssl.CERT_REQUIRED if self.options.client_ca_file is not None else ssl.CERT_NONE
        return context

    def _grpc_certificate_config(self, contents: dict[Path, bytes]) -> Any:
        import grpc

        options = self.options
        assert options.tls_cert_file is not None and options.tls_key_file is not None
        pairs = [(contents[options.tls_key_file], contents[options.tls_cert_file])]
        ca = contents[options.client_ca_file] if options.client_ca_file is not None else None
        return grpc.ssl_server_certificate_configuration(pairs, root_certificates=ca)

    async def watch(self) -> None:
        """Re-read the files every ``reload_seconds`` until cancelled. Runs on the server's event
        loop, where the handshakes happen: the live SSLContext is never changed under one (the
        files are a few KB; reading them takes microseconds)."""
        while True:
            await asyncio.sleep(self.options.reload_seconds)
            self.check()
