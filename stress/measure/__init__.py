"""What a run measures: the meter of each second, latency histograms, the Prometheus export."""
