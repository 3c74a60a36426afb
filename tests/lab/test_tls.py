"""The broker's TLS listener: present exactly when a certificate and key are provided."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labctl import health
from labctl.config import LabConfig
from labctl.lab import Lab
from tests.certificates import self_signed
from tests.conftest import RunningLab
from tests.mqtt_helpers import connect

pytestmark = pytest.mark.integration


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
