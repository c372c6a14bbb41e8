"""The ``securetrain`` command. Sub-commands live in :mod:`securetrain.cli.commands`."""
