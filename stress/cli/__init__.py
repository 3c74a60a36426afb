"""The ``stress`` command line: the parser (:mod:`~stress.cli.main`) and one module per group
of subcommands."""
