"""Domain errors raised by services and selectors; the API layer maps each to an HTTP status. And what
says the database is away rather than that a statement was wrong (database_down)."""

from django.db import DatabaseError, InterfaceError, OperationalError

# The database is down, unreachable, or dropped the connection (the driver's OperationalError and
# InterfaceError, as Django wraps them). Not IntegrityError, DataError or ProgrammingError: those are
# bugs or input no check caught.
DATABASE_DOWN = (OperationalError, InterfaceError)
# Two that come as InternalError and say the same of the server: a read-only standby (after a failover,
# say) and an idle-in-transaction timeout.
_DOWN_SQLSTATES = frozenset({"25006", "25P03"})


def database_down(exc: BaseException) -> bool:
    """Whether the database is away (the web answers 503, the writer waits and tries the batch again),
    rather than refusing this statement (a 500 with its traceback, a dead letter)."""
    if isinstance(exc, DATABASE_DOWN):
        return True
    return isinstance(exc, DatabaseError) and getattr(exc.__cause__, "sqlstate", None) in _DOWN_SQLSTATES


class TaskhubError(Exception):
    http_status = 400
    extra: dict[str, object] | None = None  # more of the answer's body, beside its "detail"

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


class NodeBusy(TaskhubError):
    """A node cannot be removed: it has unfinished tasks, or holds records that name it. The answer lists
    them (`extra`), so that an operator knows what to cancel, move or delete first."""

    http_status = 409

    def __init__(self, node: str, tasks: list[str], held: list[str]) -> None:
        what = [f"{len(tasks)}{'+' if len(tasks) >= 20 else ''} unfinished task(s)"] if tasks else []
        super().__init__(
            f"Node {node!r} cannot be removed while it has {' and '.join([*what, *held])}: drain it "
            "(taskhub node drain) and let its tasks finish, and delete what it holds first"
        )
        self.extra = {"unfinished_tasks": tasks, "holds": held}


class UpdateQueueUnavailable(TaskhubError):
    http_status = 503


class UpdateNotReplicated(UpdateQueueUnavailable):
    """/task_update with TASKHUB_UPDATE_WAIT_REPLICAS: too few replicas confirmed the update in time. It
    may still be applied (it reached the primary), so the answer says so rather than "not queued"."""
