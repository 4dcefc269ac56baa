"""Providers: one per runtime (the built-in node, kind), behind `Provider`."""
