"""Snapshots of a container's writable layer: overlay discovery, layer writing, freezing."""
