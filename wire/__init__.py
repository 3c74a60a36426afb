"""What every side of the lab must agree on about the wire, written once, standard library only.

``wire.mqtt``: MQTT framing (the fixed header's variable-length remaining length, strings, splitting
a byte stream into packets) and the few packets a probe or a load tool writes. The launcher
(``labctl``, which runs before the project's environment exists), the portal (``web``), the stress
tool (``stress``) and the test suite's ThingsBoard emulator all use it.
"""
