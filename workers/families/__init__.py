"""The node half of each task-type family: payload schema, participants, ordering key, and the run,
part and compensate steps. Importing this package registers them (workers.protocol.specs.load does).

Each family's server half (create-time checks against the database, its completion hook) is the
module of the same name in tasks_app/families/.
"""

from workers.families import blocks, cluster, nodes, noop, vdags, volumes

__all__ = ["blocks", "cluster", "nodes", "noop", "vdags", "volumes"]
