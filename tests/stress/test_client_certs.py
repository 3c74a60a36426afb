"""Client certificates: checked before any connection, then presented to a broker that requires one.

The broker here trusts the clients of an authority the test makes; a device with a certificate
of that authority gets every message through, over TLS and over WebSocket with TLS; one without
a certificate, or with one of another authority, is refused with a reason saying which.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from stress import Broker, Scenario, run, timeline
from stress.check import CheckError, check
from stress.cluster_share import placed_in, portable
from stress.errors import ScenarioError
from tests.certificates import Issued, authority, issue
from tests.stress.plain_broker import PlainBroker

ATTRIBUTES = 3  # the thermostat publishes temperature, humidity and setpoint


@dataclasses.dataclass(frozen=True)
class Pki:
    """The test's authorities and what they issued."""

    ca: Issued
    server: Issued
    device: Issued
    stranger: Issued  # a client certificate of another authority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = authority(folder, "lab"), authority(folder, "other")
    return Pki(
        ca=ca,
        server=issue(folder, ca, "server", server=True),
        device=issue(folder, ca, "device"),
        stranger=issue(folder, other, "stranger"),
    )


def scenario(broker: Broker, out: Path | None = None, **changes: Any) -> Scenario:
    return Scenario(
        target="mqtt",
        broker=broker,
        stages=timeline("steady", 5, 0.5, 2.0),
        out=out,
        qos=1,
        e2e_devices=0,
        drain=3.0,
        connect_timeout=5.0,
        **changes,
    )


# ---------------------------------------------------------------------------- settings, before connecting


def with_certificate(pki: Pki, cert: Path | None, key: Path | None, *, tls: bool = True) -> Scenario:
    return scenario(Broker(tls=tls, ca_file=pki.ca.cert, cert=cert, key=key))


def test_a_certificate_and_its_key_are_accepted(pki: Pki) -> None:
    assert with_certificate(pki, pki.device.cert, pki.device.key).broker.cert == pki.device.cert


def test_a_certificate_without_its_key_or_without_tls_is_one_line(pki: Pki) -> None:
    with pytest.raises(ScenarioError, match=r"^--cert and --key go together"):
        with_certificate(pki, pki.device.cert, None)
    with pytest.raises(ScenarioError, match=r"^--cert and --key go together"):
        with_certificate(pki, None, pki.device.key)
    with pytest.raises(ScenarioError, match=r"^--cert and --key need --tls"):
        with_certificate(pki, pki.device.cert, pki.device.key, tls=False)


def test_unusable_files_are_named(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.crt"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (missing, pki.device.key, f"cannot read --cert {missing}: No such file or directory"),
        (pki.device.cert, tmp_path, f"cannot read --key {tmp_path}: Is a directory"),
        (garbage, pki.device.key, f"--cert {garbage} holds no PEM certificate"),
        (pki.device.cert, garbage, f"--key {garbage} holds no PEM private key"),
        (pki.device.key, pki.device.key, f"--cert {pki.device.key} holds no PEM certificate"),
        (pki.device.cert, pki.stranger.key, f"--key {pki.stranger.key} is not the private key of --cert"),
    ]
    for cert, key, message in cases:
        with pytest.raises(ScenarioError) as refused:
            with_certificate(pki, cert, key)
        assert str(refused.value).startswith(message)
        assert "\n" not in str(refused.value)


def test_an_encrypted_key_is_refused_not_prompted_for(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.device.key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ScenarioError, match=f"^--key {re.escape(str(locked))} is encrypted"):
        with_certificate(pki, pki.device.cert, locked)


def test_the_certificate_and_key_travel_to_cluster_workers(pki: Pki, tmp_path: Path) -> None:
    shipped, files = portable(with_certificate(pki, pki.device.cert, pki.device.key))
    assert set(files) == {"ca_file", "cert", "key"}
    there = tmp_path / "worker"
    there.mkdir()
    placed = placed_in(shipped, files, there)
    assert placed.broker.cert == there / "cert"
    assert placed.broker.key == there / "key"
    assert placed.broker.cert.read_bytes() == pki.device.cert.read_bytes()
    assert oct(placed.broker.key.stat().st_mode & 0o777) == "0o600"


# ---------------------------------------------------------------------------- a broker that requires one


@pytest.fixture(scope="module")
def strict(pki: Pki) -> Iterator[PlainBroker]:
    """Mosquitto requiring a client certificate of the test's authority, over TLS and WebSocket with TLS."""
    instance = PlainBroker(tls=(pki.server.cert, pki.server.key), client_ca=pki.ca.cert, websocket=True)
    instance.start()
    yield instance
    instance.close()


def strict_broker(strict: PlainBroker, pki: Pki, transport: str, client: Issued | None) -> Broker:
    port = strict.wss_port if transport == "websocket" else strict.tls_port
    assert port is not None
    return Broker(
        port=port,
        tls=True,
        ca_file=pki.ca.cert,
        transport=transport,  # type: ignore[arg-type]
        cert=client.cert if client else None,
        key=client.key if client else None,
    )


TRANSPORTS = pytest.mark.parametrize("transport", ["mqtt", "websocket"])


@pytest.mark.integration
@TRANSPORTS
def test_with_its_certificate_every_message_goes_through(
    strict: PlainBroker, pki: Pki, tmp_path: Path, transport: str
) -> None:
    summary = run(scenario(strict_broker(strict, pki, transport, pki.device), tmp_path / "run"), quiet=True)
    assert summary["sent"] == summary["offered"] == 5 * 4 * ATTRIBUTES
    assert summary["acked"] == summary["sent"]
    assert summary["errors_by_reason"] == {}
    assert summary["connections_peak"] == 5


@pytest.mark.integration
@TRANSPORTS
def test_without_a_certificate_the_connection_is_refused_saying_so(
    strict: PlainBroker, pki: Pki, transport: str
) -> None:
    with pytest.raises(CheckError) as refused:
        check(scenario(strict_broker(strict, pki, transport, None)))
    message = str(refused.value)
    assert "[tls-certificate-required]" in message
    assert "check --cert and --key: the broker asks for a client certificate" in message


@pytest.mark.integration
@TRANSPORTS
def test_a_certificate_of_another_authority_is_refused_saying_so(
    strict: PlainBroker, pki: Pki, transport: str
) -> None:
    with pytest.raises(CheckError) as refused:
        check(scenario(strict_broker(strict, pki, transport, pki.stranger)))
    message = str(refused.value)
    assert "[tls-certificate-refused]" in message
    assert "the broker does not trust it" in message
