"""Built-in task types. Importing this package registers them (workers.registry.load does)."""

from workers.handlers import blocks, cluster, nodes, noop, vdag, volumes

__all__ = ["blocks", "cluster", "nodes", "noop", "vdag", "volumes"]
