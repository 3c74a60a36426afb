"""Presence the MQTT way: what a device says of its own connection.

A device publishes, retained, on ``<root>/<room>/<device>/$state``:

* ``online`` once it is connected (``{"value": "online", "ts": ms}``, or the plain word);
* ``offline`` just before a clean DISCONNECT: it ended on purpose, and raises no offline alarm;
* and it sets, in its CONNECT, a retained Last Will ``lost`` on the same topic, which the broker
  publishes when the connection ends any other way (a crash, a cut network, a keep-alive missed).

The portal keeps the latest of these per device (``devices.presence``, newest by time wins) and
shows a device that said ``offline`` as *stopped*, and one that is ``lost`` as offline at once.
Node-RED's rules read the same topic. Presence is not telemetry: it is stored apart and does not
count as the device being seen. A retained message delivered without a ``ts`` (a will, or a word)
is of unknown age: it counts as older than anything the lab knows (its time is 1970).
"""

from __future__ import annotations

import dataclasses

from web.messages import Reading
from wire.rejections import Reason, Rejection
from wire.timestamps import EPOCH

#: The attribute level of the presence topic (``stress/targets/lab.py`` says the same; a test
#: keeps them equal).
PRESENCE_ATTR = "$state"
STATES = ("online", "offline", "lost")
#: The time of a presence message of unknown age.
UNKNOWN_AGE = EPOCH


def is_presence(topic: bytes | str, root: str) -> bool:
    """Whether a raw topic is a presence topic (``<root>/<room>/<device>/$state``)."""
    suffix = "/" + PRESENCE_ATTR
    text = topic.decode("utf-8", "replace") if isinstance(topic, bytes | bytearray) else topic
    return text.startswith(root + "/") and text.endswith(suffix) and text.count("/") == 3


def checked(reading: Reading, *, retained: bool) -> Reading | Rejection:
    """A presence reading as stored, or why it is refused (a value that is not a state)."""
    if reading.value not in STATES:
        return Rejection(Reason.PRESENCE, f"a presence must be one of {', '.join(STATES)}")
    if retained and reading.ts == reading.received_at:  # no ts of its own: of unknown age
        return dataclasses.replace(reading, ts=UNKNOWN_AGE)
    return reading
