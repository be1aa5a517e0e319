"""What a release adds to its images: an SBOM per image (syft) and signatures by digest (cosign).

A release signs every image and the chart by digest and attaches each image's SBOM as a signed
attestation; a site that mirrors them verifies before it installs, and can sign what it mirrored
with its own key (``make push REGISTRY=… SIGN_KEY=cosign.key``). Nothing here reaches a
transparency log or Fulcio: keys are a cosign key pair, as an air-gapped site uses them (the
release workflow, .github/workflows/release.yml, signs keyless where GitHub's OIDC exists).

Pure functions read SBOMs (:func:`sbom_packages`, :func:`locked_requirements`); the rest are thin
adapters over the ``syft`` and ``cosign`` binaries built from their Go modules.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.build import binary

SBOM_FORMAT = "spdx-json"
ATTESTATION_TYPE = "spdxjson"
"""cosign's name for the SPDX JSON predicate the SBOM attestation carries."""


def normalized(name: str) -> str:
    """A Python distribution's name as PEP 503 compares them (``PyYAML`` = ``pyyaml``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def sbom_packages(document: dict[str, object]) -> dict[str, dict[str, str]]:
    """Package type (``pypi``, ``deb``…, from each package's purl) -> name -> version, from an
    SPDX JSON SBOM. Pure."""
    found: dict[str, dict[str, str]] = {}
    for package in document.get("packages", []):  # type: ignore[union-attr]
        for ref in package.get("externalRefs", []):
            locator = str(ref.get("referenceLocator", ""))
            match = re.match(r"^pkg:(?P<type>[a-z]+)/", locator)
            if ref.get("referenceType") != "purl" or match is None:
                continue
            name = str(package["name"])
            kind = match.group("type")
            found.setdefault(kind, {})[normalized(name) if kind == "pypi" else name] = str(package.get("versionInfo", ""))
    return found


def locked_requirements(lock: Path) -> dict[str, str]:
    """Name -> version of a ``requirements/*.txt`` lock (``name==version`` lines). Pure."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalized(name.split("[", 1)[0])] = version.strip()
    return pins


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    password: str


def _run(command: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


def _cosign_env(keys: KeyPair | None = None) -> dict[str, str]:
    # No TUF root is fetched for key-based signing; keep cosign's state out of $HOME all the same.
    env = {"TUF_ROOT": str(Path(os.environ.get("TMPDIR", "/tmp")) / "rtdetr-cosign-tuf")}
    if keys is not None:
        env["COSIGN_PASSWORD"] = keys.password
    return env


def _registry_flags(plain_http: bool) -> list[str]:
    return ["--allow-http-registry", "--allow-insecure-registry"] if plain_http else []


def generate_key_pair(directory: Path, password: str) -> KeyPair:
    """``cosign generate-key-pair`` into ``directory`` (the private key encrypted with ``password``)."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = KeyPair(directory / "cosign.key", directory / "cosign.pub", password)
    _run([str(binary("cosign")), "generate-key-pair", "--output-key-prefix", str(directory / "cosign")],
         "cosign generate-key-pair", _cosign_env(keys))  # fmt: skip
    return keys


def write_sbom(ref: str, destination: Path, plain_http: bool = False) -> dict[str, object]:
    """syft's SPDX JSON SBOM of the image ``ref`` (read from its registry by digest), written to
    ``destination``; the parsed document."""
    env = {"SYFT_CHECK_FOR_APP_UPDATE": "false", "SYFT_REGISTRY_INSECURE_USE_HTTP": "true" if plain_http else "false"}
    _run([str(binary("syft")), "scan", f"registry:{ref}", "--quiet", "-o", f"{SBOM_FORMAT}={destination}"],
         f"syft scan {ref}", env, timeout=1800)  # fmt: skip
    return json.loads(destination.read_text())


def clean(ref: str, plain_http: bool = False) -> None:
    """Remove every signature and attestation attached to ``ref`` (tests start from none; cosign
    appends to what a registry already holds)."""
    _run([str(binary("cosign")), "clean", "--force", "--type", "all", *_registry_flags(plain_http), ref], f"cosign clean {ref}", _cosign_env())


def sign(ref: str, keys: KeyPair, plain_http: bool = False) -> None:
    """Sign ``ref`` (an image or the chart, by digest) with ``keys``; no transparency log."""
    _run([str(binary("cosign")), "sign", "--yes", "--key", str(keys.private), "--tlog-upload=false", *_registry_flags(plain_http), ref],
         f"cosign sign {ref}", _cosign_env(keys))  # fmt: skip


def attest_sbom(ref: str, sbom: Path, keys: KeyPair, plain_http: bool = False) -> None:
    """Attach ``sbom`` to ``ref`` as an SPDX attestation signed with ``keys``."""
    _run([str(binary("cosign")), "attest", "--yes", "--key", str(keys.private), "--type", ATTESTATION_TYPE, "--predicate", str(sbom),
          "--tlog-upload=false", *_registry_flags(plain_http), ref], f"cosign attest {ref}", _cosign_env(keys))  # fmt: skip


def verify(ref: str, public_key: Path, plain_http: bool = False) -> subprocess.CompletedProcess[str]:
    """``cosign verify`` of ``ref`` against ``public_key`` (the result; returncode 0 = verified)."""
    command = [str(binary("cosign")), "verify", "--key", str(public_key), "--insecure-ignore-tlog", *_registry_flags(plain_http), ref]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **_cosign_env()})


def verified_sbom(ref: str, public_key: Path, plain_http: bool = False) -> dict[str, object]:
    """The SBOM attested for ``ref``, once its signature verifies against ``public_key``."""
    result = _run([str(binary("cosign")), "verify-attestation", "--key", str(public_key), "--type", ATTESTATION_TYPE,
                   "--insecure-ignore-tlog", *_registry_flags(plain_http), ref],
                  f"cosign verify-attestation {ref}", _cosign_env())  # fmt: skip
    envelope = json.loads(result.stdout.splitlines()[0])
    statement = json.loads(base64.b64decode(envelope["payload"]))
    return statement["predicate"]


def sign_release(refs: dict[str, str], keys: KeyPair, work: Path, plain_http: bool = False) -> dict[str, Path]:
    """What a release does after pushing: an SBOM per image attested with ``keys``, and every
    reference (images and ``chart``, whose value is an ``oci://`` reference) signed. Name -> SBOM."""
    sboms = {}
    for name, ref in refs.items():
        if name == "chart":
            sign(ref.removeprefix("oci://"), keys, plain_http)
            continue
        sboms[name] = work / f"{name}.spdx.json"
        write_sbom(ref, sboms[name], plain_http)
        sign(ref, keys, plain_http)
        attest_sbom(ref, sboms[name], keys, plain_http)
    return sboms
