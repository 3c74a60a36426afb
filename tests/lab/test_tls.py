"""The broker's TLS listener: present exactly when a certificate and key are provided."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from labctl import health
from labctl.config import LabConfig
from labctl.lab import Lab
from tests.conftest import RunningLab
from tests.mqtt_helpers import connect

pytestmark = pytest.mark.integration


def self_signed(folder: Path) -> Path:
    """Write server.crt and server.key for 127.0.0.1 into `folder`; returns the certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = folder / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return folder / "server.crt"


@pytest.fixture
def tls_broker(new_lab_config: Callable[..., LabConfig], tmp_path: Path) -> Iterator[tuple[LabConfig, Path]]:
    cert = self_signed(tmp_path / "certs")
    config = new_lab_config("tls", MQTT_TLS_DIR=str(tmp_path / "certs"))
    lab = Lab(config)
    lab.start("mosquitto")
    try:
        yield config, cert
    finally:
        lab.stop("mosquitto")


def test_device_connects_over_tls(tls_broker: tuple[LabConfig, Path]) -> None:
    config, cert = tls_broker
    running = RunningLab(config, Lab(config))
    device, password = running.device
    client = running.mqtt_client(device, password)
    client.tls_set(ca_certs=str(cert), cert_reqs=ssl.CERT_REQUIRED)
    reason = connect(client, config.port("MQTT_TLS_PORT"))
    client.disconnect()
    client.loop_stop()
    assert not reason.is_failure


def test_plain_mqtt_is_refused_on_the_tls_port(tls_broker: tuple[LabConfig, Path]) -> None:
    config, _ = tls_broker
    assert health.mqtt_connect(config.port("MQTT_TLS_PORT"), "x", "y") is not None


def test_no_tls_listener_without_a_certificate(lab: RunningLab) -> None:
    assert not health.port_open(lab.port("MQTT_TLS_PORT"))
