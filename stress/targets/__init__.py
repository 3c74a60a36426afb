"""Targets: where a fleet publishes (this lab, any MQTT broker, ThingsBoard), behind one interface
(:mod:`~stress.targets.base`); :mod:`~stress.targets.registry` builds the one a scenario names."""
