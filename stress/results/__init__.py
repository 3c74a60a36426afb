"""A run's results: its summary, its folder, the report, and the console while it runs."""
