"""Importing this module registers every Lamina handler with kopf's default registry."""

from lamina.handlers import commits, indexes, setup, tree

__all__ = ["commits", "indexes", "setup", "tree"]
