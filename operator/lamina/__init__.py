"""Lamina: container images managed inside Kubernetes.

The package is layered, and the layers only import downwards (checked by import-linter):

- :mod:`lamina.api` -- the pydantic models of the three custom resources.  They are the single
  source of truth for the CRDs in ``crds/``, which are generated from them.
- :mod:`lamina.domain` -- pure decisions: given a spec and what was observed, what the status
  should be and which children should exist.  No I/O, so it is tested with plain tables.
- :mod:`lamina.kube` -- the thin async facade over the Kubernetes API.
- :mod:`lamina.handlers` -- kopf handlers: read, call the domain, write status.
- :mod:`lamina.cli` -- the ``lamina`` command.
"""

__version__ = "0.1.0"
