"""The pure parts of the endpoint's authentication: token files, Authorization headers, the
constant-time check, option validation, gRPC peer addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtdetr_edge.errors import UnauthorizedError
from rtdetr_edge.server.grpc_server import peer_host
from rtdetr_edge.server.security import CredentialReloader, SecurityOptions, bearer_token, parse_tokens, token_allowed


def test_token_files_ignore_comments_blank_lines_and_whitespace() -> None:
    assert parse_tokens("# cameras\n  abc  \n\n#x\ndef\r\n") == {"abc", "def"}
    assert parse_tokens("") == frozenset()


@pytest.mark.parametrize(("header", "token"), [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None),
                                                ("Bearer", None), ("", None), (None, None)])  # fmt: skip
def test_bearer_token_of_an_authorization_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_only_listed_tokens_are_allowed_and_no_prefix_or_empty_list_passes() -> None:
    allowed = frozenset({"camera-1", "camera-2"})
    assert token_allowed("camera-2", allowed)
    assert not token_allowed("camera-", allowed) and not token_allowed("camera-22", allowed)
    assert not token_allowed(None, allowed) and not token_allowed("camera-1", frozenset())


def test_an_empty_token_file_refuses_everyone(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("# nobody yet\n")
    reloader = CredentialReloader(SecurityOptions(token_file=tmp_path / "tokens"))
    with pytest.raises(UnauthorizedError, match="not accepted"):
        reloader.require_token("Bearer anything")
    with pytest.raises(UnauthorizedError, match="needs 'Authorization: Bearer"):
        reloader.require_token(None)


def test_half_configured_tls_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both a certificate and its key"):
        SecurityOptions(tls_cert_file=tmp_path / "tls.crt")
    with pytest.raises(ValueError, match="need TLS"):
        SecurityOptions(client_ca_file=tmp_path / "ca.crt")
    assert not SecurityOptions().enabled and SecurityOptions(token_file=tmp_path / "t").enabled


@pytest.mark.parametrize(("peer", "host"), [("ipv4:10.0.0.7:51234", "10.0.0.7"), ("ipv6:[::1]:5001", "::1"),
                                            ("unix:/run/x.sock", "unix:/run/x.sock"), ("", None)])  # fmt: skip
def test_the_client_address_of_a_grpc_peer(peer: str, host: str | None) -> None:
    assert peer_host(peer) == host
