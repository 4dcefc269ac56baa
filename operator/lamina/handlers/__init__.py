"""kopf handlers: thin I/O around the pure decisions in :mod:`lamina.domain`.

Importing :mod:`lamina.handlers.registry` registers every handler with kopf.  kopf's indexes
hold the cluster; watch events mark a namespace dirty, and one reconcile loop
(:mod:`lamina.handlers.loop`) decides each pass with :func:`lamina.domain.reconcile.decide`,
carries the actions out (:mod:`lamina.handlers.builds`) and writes only the statuses that
differ (:mod:`lamina.handlers.tree`).
"""
