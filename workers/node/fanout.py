"""Fan-out to participating nodes (Kadalu's "POST to all participating nodes"), over the broker.

The initiator sends each remote participant its part on that node's queue and waits on a Redis
list for the answers; its own part runs in place (waiting on its own queue could deadlock). A
node without a live heartbeat fails at once; one that does not answer in time fails with a
timeout. Nothing waits longer than TASKHUB_FANOUT_TIMEOUT.

Cancel: before sending each participant its part, the initiator checks for a cancel, and sends no
more parts once there is one. It still waits for every part it did send: each stops at its own safe
points (or refuses to start), so the answers come soon. Then it has the parts that did something
undone, waits for that too, and raises Cancelled saying where it stopped and what was undone. The
task is reported cancelled only then, so the next task of its ordering key never runs beside a part
of this one. A part that has not answered within TASKHUB_FANOUT_TIMEOUT is sent its undoing, which
waits for the part on that node; the report names those nodes (compensation_sent).

Failure: when a part fails and the type declares a compensating step, the parts that succeeded (and
those that did not answer in time) are rolled back, whether or not the run will be retried, so that
every try starts from nothing and a cancel that comes during a retry's backoff leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any, cast

from celery import current_app
from django.conf import settings

from workers.node import runner
from workers.node.context import NodeRunContext
from workers.protocol import keys, run_end, specs
from workers.protocol.connection import client
from workers.protocol.errors import Cancelled, FanOutFailed, Superseded
from workers.protocol.liveness import alive
from workers.protocol.messages import PartKwargs
from workers.protocol.queues import EXECUTE_PART_TASK

Answer = dict[str, Any]


def fan_out(ctx: NodeRunContext, parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    answers = gather(ctx, parts, mode="part")
    spec = specs.get(ctx.task_type)
    can_undo = spec is not None and spec.compensate is not None
    end = run_end.end_of(ctx.run_id)
    if end is not None:
        _stop(ctx, parts, answers, can_undo, end)
    if all(a["ok"] for a in answers.values()):
        return {node: a["result"] for node, a in answers.items()}
    failure = FanOutFailed(answers)
    if can_undo:
        # Nodes that succeeded, and nodes that did not answer in time: their part may still run
        # later, and its undoing waits for it on that node.
        done = {node: parts[node] for node, a in answers.items() if a["ok"] or _kind(a) == "Timeout"}
        if done:
            failure = FanOutFailed(answers, rolled_back=gather(_undoing(ctx), done, mode="compensate"))
    raise failure


def _stop(
    ctx: NodeRunContext, parts: dict[str, dict[str, Any]], answers: dict[str, Answer], can_undo: bool, end: run_end.End
) -> None:
    """The run was cancelled (or ended by the server) during the fan-out: undo what its parts did, wait
    for that, then raise. A part that answered (done, or stopped midway at a safe point) is undone here;
    one that never answered in time is sent its undoing, which waits for the part on its node."""
    # Every part that ran, however it ended (done, stopped midway by the cancel, failed): compensating
    # steps undo only what this run did, so undoing one that did nothing is harmless.
    touched = {node: parts[node] for node, a in answers.items() if _kind(a) not in (*_NEVER_RAN, "Timeout")}
    compensated = gather(_undoing(ctx), touched, mode="compensate") if can_undo and touched else {}
    unanswered = [node for node, a in answers.items() if _kind(a) == "Timeout"]
    if can_undo:
        for node in unanswered:
            _send(ctx, node, parts[node], mode="compensate", reply_key=_reply_key(ctx, "compensate-late"))
    done = sum(1 for a in answers.values() if a["ok"])
    if end is run_end.End.VOID:
        raise Superseded(f"run {ctx.run_id} of task {ctx.task_id} was ended by the server during its fan-out")
    message = f"task {ctx.task_id} was cancelled during its fan-out; {done} of {len(parts)} part(s) had run"
    if compensated:
        message += f"; undone on {', '.join(sorted(compensated))}"
    details: dict[str, Any] = {"stopped": "during the fan-out", "nodes": answers, "compensated": compensated}
    if unanswered and can_undo:
        details["compensation_sent"] = unanswered
    raise Cancelled(message, details)


# Answers of parts that never ran: nothing of theirs to undo.
_NEVER_RAN = ("NodeOffline", "NotSent")
# The longest BLPOP for the participants' answers, in seconds: the initiator checks its cancel between them.
_MAX_WAIT = 3


def _kind(answer: Answer) -> str:
    return str(answer.get("error", {}).get("type", ""))


def _undoing(ctx: NodeRunContext) -> NodeRunContext:
    return dataclasses.replace(ctx, compensating=True)


def _reply_key(ctx: NodeRunContext, mode: str) -> str:
    return keys.fanout_reply_key(ctx.run_id, ctx.retries, mode, uuid.uuid4().hex[:8])


def _send(ctx: NodeRunContext, node: str, payload: dict[str, Any], *, mode: str, reply_key: str) -> None:
    kwargs: PartKwargs = {
        "task_id": ctx.task_id,
        "run_id": ctx.run_id,
        "task_type": ctx.task_type,
        "payload": payload,
        "node": node,
        "attempt": ctx.attempt,
        "retries": ctx.retries,
        "mode": mode,
        "reply_key": reply_key,
    }
    current_app.send_task(EXECUTE_PART_TASK, kwargs=dict(kwargs))


def gather(ctx: NodeRunContext, parts: dict[str, dict[str, Any]], *, mode: str) -> dict[str, Answer]:
    """Run `mode` ("part" or "compensate") on every node in `parts`; every node's answer, in order.
    A cancel stops the sending of parts (the nodes not sent one answer "NotSent"), never the waiting
    for those sent: they stop on their own."""
    timeout = float(settings.TASKHUB_FANOUT_TIMEOUT)
    reply_key = _reply_key(ctx, mode)
    answers: dict[str, Answer] = {}
    waiting: set[str] = set()
    for node, payload in parts.items():
        if node == ctx.node:
            continue
        if ctx.cancelled():
            break  # a safe point between participants: send no more
        if not alive(node):
            answers[node] = _failed("NodeOffline", f"node {node} is offline (no heartbeat)")
            continue
        _send(ctx, node, payload, mode=mode, reply_key=reply_key)
        waiting.add(node)
    if ctx.node in parts and not ctx.cancelled():
        answers[ctx.node] = answer_for(
            lambda: runner.run_part(
                task_id=ctx.task_id,
                run_id=ctx.run_id,
                task_type=ctx.task_type,
                payload=parts[ctx.node],
                attempt=ctx.attempt,
                retries=ctx.retries,
                mode=mode,
            )
        )
    redis_client = client(blocking=_MAX_WAIT)
    deadline = time.monotonic() + timeout
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # Short waits in a loop; the client's socket timeout outlasts each (connection.client: blocking).
        wait = max(1, min(_MAX_WAIT, int(left + 0.999)))
        popped = cast(list[bytes] | None, redis_client.blpop([reply_key], timeout=wait))
        if popped:
            answer = json.loads(popped[1])
            if answer["node"] in waiting:
                waiting.discard(answer["node"])
                answers[answer["node"]] = answer
    redis_client.delete(reply_key)
    for node in parts:
        if node in answers:
            continue
        if node in waiting:
            answers[node] = _failed("Timeout", f"node {node} did not answer within {timeout:g}s")
        else:
            answers[node] = _failed("NotSent", f"node {node}: its part was not sent, the task was cancelled")
    return {node: answers[node] for node in parts}


def answer_for(work: Any) -> Answer:
    try:
        return {"ok": True, "result": work()}
    except Exception as exc:
        return _failed(type(exc).__name__, str(exc))


def send_answer(reply_key: str, node: str, answer: Answer) -> None:
    pipe = client().pipeline()
    pipe.rpush(reply_key, json.dumps({"node": node, **answer}))
    pipe.expire(reply_key, 3600)  # an initiator that gave up never reads it
    pipe.execute()  # type: ignore[no-untyped-call]


def _failed(kind: str, message: str) -> Answer:
    return {"ok": False, "error": {"type": kind, "message": message}}
