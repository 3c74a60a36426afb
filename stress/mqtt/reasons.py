"""Why a connection or a message failed, as short stable names that reports can count.

Names are the same for MQTT 3.1.1 and 5 where the meaning is the same (a bad password is
``connack-bad-credentials`` in both), so runs with either protocol compare directly.
"""

from __future__ import annotations

import errno
import socket
import ssl

from stress.mqtt.codec import MQTT5

#: CONNACK return codes of MQTT 3.1.1.
CONNACK_311 = {
    1: "bad-protocol-version",
    2: "client-id-rejected",
    3: "server-unavailable",
    4: "bad-credentials",
    5: "not-authorized",
}

#: MQTT 5 reason codes (CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, DISCONNECT) that mean failure,
#: or a broker-sent DISCONNECT.
REASON_5 = {
    0x04: "disconnect-with-will",
    0x80: "unspecified-error",
    0x81: "malformed-packet",
    0x82: "protocol-error",
    0x83: "implementation-specific-error",
    0x84: "bad-protocol-version",
    0x85: "client-id-rejected",
    0x86: "bad-credentials",
    0x87: "not-authorized",
    0x88: "server-unavailable",
    0x89: "server-busy",
    0x8A: "banned",
    0x8B: "server-shutting-down",
    0x8C: "bad-auth-method",
    0x8D: "keepalive-timeout",
    0x8E: "session-taken-over",
    0x8F: "topic-filter-invalid",
    0x90: "topic-name-invalid",
    0x91: "packet-id-in-use",
    0x92: "packet-id-not-found",
    0x93: "receive-maximum-exceeded",
    0x94: "topic-alias-invalid",
    0x95: "packet-too-large",
    0x96: "message-rate-too-high",
    0x97: "quota-exceeded",
    0x98: "administrative-action",
    0x99: "payload-format-invalid",
    0x9A: "retain-not-supported",
    0x9B: "qos-not-supported",
    0x9C: "use-another-server",
    0x9D: "server-moved",
    0x9E: "shared-subscriptions-not-supported",
    0x9F: "connection-rate-exceeded",
    0xA0: "maximum-connect-time",
    0xA1: "subscription-ids-not-supported",
    0xA2: "wildcard-subscriptions-not-supported",
}

#: Reasons that mean the credentials (not the network) are the problem.
AUTH_REASONS = frozenset({"connack-bad-credentials", "connack-not-authorized", "connack-bad-auth-method"})


def connack_reason(code: int, version: int) -> str:
    """``connack-<name>`` for a refused CONNACK."""
    table = REASON_5 if version == MQTT5 else CONNACK_311
    return "connack-" + table.get(code, f"code-{code}")


def reason_name(code: int) -> str:
    """The name of an MQTT 5 reason code (PUBACK, PUBREC, PUBCOMP, SUBACK, DISCONNECT)."""
    return REASON_5.get(code, f"code-{code}")


def describe_connack(code: int, version: int) -> str:
    """A human sentence for a refused CONNACK, with the code the broker sent."""
    name = connack_reason(code, version).removeprefix("connack-").replace("-", " ")
    return f"the broker refused the connection (CONNACK {code:#04x}: {name})"


#: Exception types and their reasons, most specific first (SSL errors are OSErrors too).
_EXCEPTION_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (TimeoutError, "timeout"),
    (ssl.SSLCertVerificationError, "tls-verify"),
    (ssl.SSLError, "tls-handshake"),
    (socket.gaierror, "dns"),
    (ConnectionRefusedError, "tcp-refused"),
    (ConnectionResetError, "connection-reset"),
    (BrokenPipeError, "connection-lost"),
    (ConnectionAbortedError, "connection-lost"),
)

_ERRNO_REASONS = {
    errno.ENETUNREACH: "network-unreachable",
    errno.EHOSTUNREACH: "network-unreachable",
    errno.EMFILE: "too-many-open-files",
    errno.ENFILE: "too-many-open-files",
    errno.EADDRNOTAVAIL: "no-local-ports",
}


#: TLS alerts by which a broker refuses this client's certificate (or its lack of one).
_CERTIFICATE_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "tls-certificate-required",
    "TLSV1_ALERT_UNKNOWN_CA": "tls-certificate-refused",
    "SSLV3_ALERT_BAD_CERTIFICATE": "tls-certificate-refused",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "tls-certificate-refused",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "tls-certificate-refused",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "tls-certificate-refused",
    "TLSV1_ALERT_ACCESS_DENIED": "tls-certificate-refused",
}


def classify_exception(exc: BaseException) -> str:
    """The reason name for an exception raised while connecting or talking to the broker.

    A broker that wants a client certificate and got none says ``tls-certificate-required``;
    one that does not trust the certificate it got (another authority, expired, revoked) says
    ``tls-certificate-refused``.
    """
    if isinstance(exc, ssl.SSLError) and exc.reason in _CERTIFICATE_ALERTS:
        return _CERTIFICATE_ALERTS[exc.reason]
    for kind, reason in _EXCEPTION_REASONS:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, OSError):
        return _ERRNO_REASONS.get(exc.errno or 0, "network")
    return "error"
