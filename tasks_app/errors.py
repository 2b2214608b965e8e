"""Domain errors raised by services and selectors; the API layer maps each to an HTTP status."""


class TaskhubError(Exception):
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(TaskhubError):
    http_status = 400


class TaskNotFound(TaskhubError):
    http_status = 404

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task {task_id!r} not found")
        self.task_id = task_id


class TaskConflict(TaskhubError):
    """A create reused a task_id with a different body, or a status change is not allowed."""

    http_status = 409


class AlreadyExists(TaskhubError):
    """A create named a cluster or node that exists (creating it again would overwrite what it holds)."""

    http_status = 409


class UpdateQueueUnavailable(TaskhubError):
    http_status = 503


class UpdateNotReplicated(UpdateQueueUnavailable):
    """/task_update with TASKHUB_UPDATE_WAIT_REPLICAS: too few replicas confirmed the update in time. It
    may still be applied (it reached the primary), so the answer says so rather than "not queued"."""
