"""Small MQTT helpers for tests: connect and wait, subscribe and collect."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode


def connect(client: mqtt.Client, port: int, timeout: float = 5.0) -> ReasonCode:
    """Connect and wait for the CONNACK; returns its reason code (the loop keeps running)."""
    done = threading.Event()
    result: list[ReasonCode] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        result.append(reason)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    if not done.wait(timeout):
        client.loop_stop()
        raise TimeoutError(f"no CONNACK from 127.0.0.1:{port} within {timeout}s")
    return result[0]


@dataclass
class Collector:
    """Messages received on a subscription, in arrival order."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, topic: str, timeout: float = 5.0) -> bytes:
        """The payload of the first message on `topic`; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for got_topic, payload in self.messages:
                    if got_topic == topic:
                        return payload
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"nothing on {topic} within {timeout}s; got {self.topics()}")
                self.arrived.wait(remaining)

    def topics(self) -> list[str]:
        """Topics received so far."""
        return [topic for topic, _ in self.messages]


@contextmanager
def collecting(client: mqtt.Client, port: int, topic_filter: str) -> Iterator[Collector]:
    """Connect `client`, subscribe to `topic_filter`, and collect what arrives."""
    collector = Collector()
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with collector.arrived:
            collector.messages.append((message.topic, bytes(message.payload)))
            collector.arrived.notify_all()

    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    reason = connect(client, port)
    assert not reason.is_failure, f"subscriber refused: {reason}"
    client.subscribe(topic_filter, qos=1)
    assert subscribed.wait(5), "no SUBACK"
    try:
        yield collector
    finally:
        client.disconnect()
        client.loop_stop()


def publish(client: mqtt.Client, port: int, topic: str, payload: str, qos: int = 1) -> mqtt.MQTTMessageInfo:
    """Connect, publish one message, wait for it to be sent (and acknowledged at QoS 1), disconnect."""
    reason = connect(client, port)
    assert not reason.is_failure, f"publisher refused: {reason}"
    try:
        info = client.publish(topic, payload, qos=qos)
        info.wait_for_publish(5)
        return info
    finally:
        client.disconnect()
        client.loop_stop()


def granted_qos(client: mqtt.Client, port: int, topic_filters: list[str]) -> list[int]:
    """Connect, subscribe to each filter at QoS 1, and return the SUBACK codes (0x80 = refused)."""
    answered = threading.Event()
    codes: list[int] = []

    def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, reasons: list[ReasonCode], _p: object) -> None:
        codes.extend(reason.value for reason in reasons)
        answered.set()

    client.on_subscribe = on_subscribe
    reason = connect(client, port)
    assert not reason.is_failure, f"subscriber refused: {reason}"
    try:
        client.subscribe([(topic_filter, 1) for topic_filter in topic_filters])
        assert answered.wait(5), "no SUBACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return codes
