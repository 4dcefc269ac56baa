"""kopf handlers: thin I/O around the pure decisions in :mod:`lamina.domain`.

Importing :mod:`lamina.handlers.registry` registers every handler with kopf.  Handlers are
level-triggered: each event recomputes what the affected objects' status should be from
in-memory indexes of the cluster, and patches only what differs.
"""
