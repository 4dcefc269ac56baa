"""Importing this module registers every Lamina handler with kopf's default registry."""

from lamina.handlers import builds, commits, indexes, setup, transitions, tree

__all__ = ["builds", "commits", "indexes", "setup", "transitions", "tree"]
