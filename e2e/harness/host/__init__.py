"""Everything that touches the machine: processes, locks, devices, files, health checks."""
