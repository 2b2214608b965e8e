"""Queue names, defined once. Routing itself is decided in workers.routing."""

SERVER_QUEUE = "taskhub.server"  # sweeps and other work that needs the database
NODE_QUEUE_PREFIX = "node."

EXECUTE_TASK = "taskhub.execute"  # run a task's handler on its assigned node
EXECUTE_PART_TASK = "taskhub.execute_part"  # run one participant's piece of a fanned-out task
SWEEP_TASK = "taskhub.sweep_undelivered"
DEAD_NODES_TASK = "taskhub.sweep_dead_nodes"
PURGE_TASK = "taskhub.purge_finished"  # retention: delete old finished tasks (tasks_app.retention)


def node_queue(node: str) -> str:
    return f"{NODE_QUEUE_PREFIX}{node}"
