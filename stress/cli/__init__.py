"""The ``stress`` command line: :mod:`~stress.cli.main` builds the parser (of
:mod:`~stress.cli.parser`) and calls the library; one module per group of subcommands."""
