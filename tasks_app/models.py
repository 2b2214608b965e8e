"""All models of the app, where Django looks for them: the tasks table (tasks_app/tasks/models.py) and
the fleet with the records that completion hooks write (tasks_app/fleet/models.py)."""

from tasks_app.fleet.models import BlockAllocation, Cluster, Node, StorageUnit, Vdag, Volume
from tasks_app.tasks.models import SEED_FIELDS, GlobalTask, StreamOffset, TaskStatusChange, new_task_id, now_ts

__all__ = [
    "SEED_FIELDS",
    "BlockAllocation",
    "Cluster",
    "GlobalTask",
    "Node",
    "StorageUnit",
    "StreamOffset",
    "TaskStatusChange",
    "Vdag",
    "Volume",
    "new_task_id",
    "now_ts",
]
