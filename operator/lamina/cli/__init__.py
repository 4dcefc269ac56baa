"""The ``lamina`` command: one module per sub-command, wired together in :mod:`.main`."""
