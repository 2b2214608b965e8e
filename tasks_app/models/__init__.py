"""All models of the app: the tasks table, and the cluster records that completion hooks write."""

from tasks_app.models.cluster import BlockAllocation, Cluster, Node, StorageUnit, Vdag, Volume
from tasks_app.models.tasks import GlobalTask, StreamOffset, TaskStatusChange, new_task_id, now_ts

__all__ = [
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
