"""The MQTT client of the load generator: a packet codec and an asyncio session per connection."""
