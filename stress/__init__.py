"""Simulated device fleets against the lab, any MQTT broker, or ThingsBoard."""
