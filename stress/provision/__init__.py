"""Device accounts on a target: created before a run, removed after (``stress provision``)."""
