"""The network surface as documented: every socket the native lab listens on is on loopback.

The README promises that `./lab up` listens on 127.0.0.1 only. This reads, for every process of
the session's lab (each service and all its children), the sockets it holds from ``/proc``, and
fails on any listening TCP socket or bound UDP socket whose address is not a loopback address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from labctl.services import SERVICE_NAMES
from tests.conftest import RunningLab
from tests.mqtt_helpers import connect

pytestmark = pytest.mark.integration

TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    """One socket a lab process listens on."""

    protocol: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    process: str

    @property
    def loopback(self) -> bool:
        address = self.address
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback

    def __str__(self) -> str:
        return f"{self.process} {self.protocol} {self.address}:{self.port}"


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net writes it: 32-bit words in the machine's (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            children = task / "children"
            if children.exists():
                queue.extend(int(child) for child in children.read_text().split())
    return found


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = fd.readlink().name
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def lab_listeners(lab: RunningLab) -> list[Listener]:
    """Listening TCP and bound UDP sockets of every process of `lab`."""
    owners: dict[str, str] = {}
    for name in SERVICE_NAMES:
        pid = lab.lab.table.pid(name)
        assert pid is not None, f"{name} is not running"
        for process in descendants(pid):
            for inode in socket_inodes(process):
                owners[inode] = name
    found = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{protocol}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in owners or (protocol.startswith("tcp") and state != TCP_LISTEN):
                continue
            address, port = local.split(":")
            found.append(Listener(protocol, _address(address), int(port, 16), owners[inode]))
    return found


def test_address_decoding() -> None:
    assert _address("0100007F") == ipaddress.ip_address("127.0.0.1")
    assert _address("0000000000000000FFFF00000100007F") == ipaddress.ip_address("::ffff:127.0.0.1")
    assert _address("00000000000000000000000001000000") == ipaddress.ip_address("::1")
    assert not Listener("tcp6", _address("00000000000000000000000000000000"), 9001, "x").loopback


def test_every_listener_of_the_lab_is_on_loopback(lab: RunningLab) -> None:
    listeners = lab_listeners(lab)
    ports = {listener.port for listener in listeners}
    for variable in ("MQTT_PORT", "MQTT_WS_PORT", "PORTAL_PORT", "NODERED_PORT", "POSTGRES_PORT"):
        assert lab.port(variable) in ports, f"nothing listens on {variable}: the check would prove nothing"
    exposed = [str(listener) for listener in listeners if not listener.loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_the_websocket_listener_takes_ipv4_clients_on_loopback(lab: RunningLab) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, transport="websockets")
    client.username_pw_set(lab.env["LAB_FLEET_USER"], lab.env["LAB_FLEET_PASSWORD"])
    reason = connect(client, lab.port("MQTT_WS_PORT"))
    client.disconnect()
    client.loop_stop()
    assert not reason.is_failure, reason
