"""TLS for the engine's connections: the authority trusted, and the client's own certificate.

The files are read when the settings are validated (so a problem is one line before any
connection) and again when a run makes its connections' context. Each problem names its file:
one that cannot be read, a certificate or key that is not PEM, an encrypted key (a load
generator cannot stop to ask for a passphrase), a key that is not the certificate's.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from stress.errors import ScenarioError


def client_context(
    *, ca_file: Path | None, insecure: bool, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """The context of TLS connections: ``ca_file`` trusted (default: the system's authorities),
    no checks at all when ``insecure``, and the client certificate ``cert`` with its ``key``.

    Raises:
        ScenarioError: a file cannot be used, in one line naming it.
    """
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except OSError as exc:
        raise ScenarioError(f"cannot read --ca-file {ca_file}: {exc.strerror or exc}") from None
    except ssl.SSLError:
        raise ScenarioError(f"--ca-file {ca_file} holds no PEM certificate") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None and key is not None:
        load_certificate(context, cert, key)
    return context


def load_certificate(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Present ``cert`` (PEM, with any intermediate certificates after it) and its ``key``.

    Raises:
        ScenarioError: in one line naming the file at fault.
    """
    for flag, path in (("--cert", cert), ("--key", key)):
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ScenarioError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None
    asked: list[bool] = []

    def passphrase() -> bytes:  # asked only for an encrypted key: refused, never prompted for
        asked.append(True)
        return b""

    try:
        context.load_cert_chain(cert, key, password=passphrase)
    except ssl.SSLError as exc:
        raise ScenarioError(_certificate_problem(cert, key, exc, encrypted=bool(asked))) from None


def _certificate_problem(cert: Path, key: Path, exc: ssl.SSLError, *, encrypted: bool) -> str:
    if encrypted:
        return (
            f"--key {key} is encrypted: give the key without its passphrase "
            "(openssl pkey -in KEY -out PLAIN.key)"
        )
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"--key {key} is not the private key of --cert {cert}"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(cert))
    except ssl.SSLError:
        return f"--cert {cert} holds no PEM certificate"
    return f"--key {key} holds no PEM private key"
