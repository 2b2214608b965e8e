"""Fan-out to participating nodes (Kadalu's "POST to all participating nodes"), over the broker.

The initiator sends each remote participant its part on that node's queue and waits on a Redis
list for the answers; its own part runs in place (waiting on its own queue could deadlock). A
node without a live heartbeat fails at once; one that does not answer in time fails with a
timeout. Nothing waits longer than TASKHUB_FANOUT_TIMEOUT.

When the failure is for good (no automatic retry left, or not a failure a retry could cure) and
the task type declares a compensating step, the nodes whose part succeeded are rolled back.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, cast

from celery import current_app
from django.conf import settings

from tasks_app import update_stream
from workers import heartbeat, registry, runner
from workers.context import RunContext
from workers.errors import FanOutFailed
from workers.queues import EXECUTE_PART_TASK

Answer = dict[str, Any]


def fan_out(ctx: RunContext, parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    answers = gather(ctx, parts, mode="part")
    if all(a["ok"] for a in answers.values()):
        return {node: a["result"] for node, a in answers.items()}
    failure = FanOutFailed(answers)
    ttype = registry.get(ctx.task_type)
    if ttype is not None and ttype.compensate is not None and (ctx.final or not failure.recoverable):
        # Nodes that succeeded, and nodes that did not answer in time: their part may still run
        # later, and its undoing queues behind it on the same node.
        done = {
            node: parts[node]
            for node, a in answers.items()
            if a["ok"] or a.get("error", {}).get("type") == "Timeout"
        }
        if done:
            failure = FanOutFailed(answers, rolled_back=gather(ctx, done, mode="compensate"))
    raise failure


def gather(ctx: RunContext, parts: dict[str, dict[str, Any]], *, mode: str) -> dict[str, Answer]:
    """Run `mode` ("part" or "compensate") on every node in `parts`; every node's answer, in order."""
    timeout = float(settings.TASKHUB_FANOUT_TIMEOUT)
    reply_key = f"{settings.TASKHUB_STREAM_PREFIX}:fanout:{ctx.run_key}:{mode}:{uuid.uuid4().hex[:8]}"
    answers: dict[str, Answer] = {}
    waiting: set[str] = set()
    for node, payload in parts.items():
        if node == ctx.node:
            continue
        if not heartbeat.alive(node):
            answers[node] = _failed("NodeOffline", f"node {node} is offline (no heartbeat)")
            continue
        current_app.send_task(
            EXECUTE_PART_TASK,
            kwargs={
                "task_id": ctx.task_id,
                "task_type": ctx.task_type,
                "payload": payload,
                "node": node,
                "attempt": ctx.attempt,
                "retries": ctx.retries,
                "mode": mode,
                "reply_key": reply_key,
            },
        )
        waiting.add(node)
    if ctx.node in parts:
        answers[ctx.node] = answer_for(
            lambda: runner.run_part(
                task_id=ctx.task_id,
                task_type=ctx.task_type,
                payload=parts[ctx.node],
                attempt=ctx.attempt,
                retries=ctx.retries,
                mode=mode,
            )
        )
    client = update_stream.client()
    deadline = time.monotonic() + timeout
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # Short waits in a loop: the shared client's socket timeout (5 s) must outlast each one.
        wait = max(1, min(3, int(left + 0.999)))
        popped = cast(list[bytes] | None, client.blpop([reply_key], timeout=wait))
        if popped:
            answer = json.loads(popped[1])
            if answer["node"] in waiting:
                waiting.discard(answer["node"])
                answers[answer["node"]] = answer
    client.delete(reply_key)
    for node in waiting:
        answers[node] = _failed("Timeout", f"node {node} did not answer within {timeout:g}s")
    return {node: answers[node] for node in parts}


def answer_for(work: Any) -> Answer:
    try:
        return {"ok": True, "result": work()}
    except Exception as exc:
        return _failed(type(exc).__name__, str(exc))


def send_answer(reply_key: str, node: str, answer: Answer) -> None:
    client = update_stream.client()
    pipe = client.pipeline()
    pipe.rpush(reply_key, json.dumps({"node": node, **answer}))
    pipe.expire(reply_key, 3600)  # an initiator that gave up never reads it
    pipe.execute()  # type: ignore[no-untyped-call]


def _failed(kind: str, message: str) -> Answer:
    return {"ok": False, "error": {"type": kind, "message": message}}
