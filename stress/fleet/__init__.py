"""The simulated devices of a fleet: a device (:mod:`stress.fleet.device`), driven by its fleet's
clock, and the link that carries its messages (:mod:`stress.fleet.links` for MQTT; ThingsBoard's
gateway and HTTP links live with its target). Nothing here imports the engine: a device talks
to its fleet through the narrow :class:`~stress.fleet.device.Fleet` interface."""
