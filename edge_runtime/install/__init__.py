"""Updating the device: signed bundles, versions under a root, a gate, an atomic switch, probation, rollback."""
