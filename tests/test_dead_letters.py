"""The dead-letter stream: what the writer cannot apply is kept, shown (metrics, dashboard, admin) and
discarded by an operator, never dropped.

The refused entry is a status update whose data is `{"x":NaN}`: Python's JSON reader takes it, but
neither database stores it (SQLite's JSON_VALID check on the JSON column, PostgreSQL's jsonb input),
so the same test drives a real refusal on both backends."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tasks_app.models import GlobalTask, StreamOffset
from tasks_app.tasks import dead_letters
from tasks_app.tasks import stream as update_stream
from tasks_app.tasks.services import task_create, task_update_push
from tasks_app.tasks.transitions import StatusUpdate
from tasks_app.tasks.writer import UNREADABLE, _apply_guarded, ensure_offsets, run_once
from workers.protocol import keys

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

LIST_URL = "/admin/dead-letters/"
DISCARD_URL = "/admin/dead-letters/discard/"
BAD_DATA = b'{"x":NaN}'

Capture = Callable[..., AbstractContextManager[Any]]


@pytest.fixture
def one_shard(settings: Any, redis_stream: redis.Redis) -> redis.Redis:
    """Every entry in shard 0, so the good and the bad entries share a batch."""
    settings.TASKHUB_STREAM_SHARDS = 1
    return redis_stream


@pytest.fixture
def staff() -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_user("ops", password="pw-for-tests-only", is_staff=True))
    return client


def scrape(client: Client) -> dict[str, float]:
    resp = client.get("/metrics")
    assert resp.status_code == 200, resp.content
    return {
        s.name: s.value
        for family in text_string_to_metric_families(resp.content.decode())
        for s in family.samples
        if not s.labels
    }


def drain() -> None:
    while run_once():
        pass


def csrf_token(client: Client) -> str:
    client.get(LIST_URL)
    return str(client.cookies["csrftoken"].value)


def push_bad(r: redis.Redis, task_id: str) -> str:
    fields: Any = {"task_id": task_id, "status": "completed", "source": "test", "data": BAD_DATA}
    sid: bytes = r.xadd(keys.stream_key(keys.shard_for(task_id)), fields)  # type: ignore[assignment]
    return sid.decode()


def test_a_refused_entry_is_dead_lettered_shown_and_discarded(
    one_shard: redis.Redis, staff: Client, django_capture_on_commit_callbacks: Capture
) -> None:
    good, _ = task_create(task_type="t")
    bad, _ = task_create(task_type="t")
    other, _ = task_create(task_type="t")
    task_update_push(task_id=good.task_id, status="received")
    task_update_push(task_id=bad.task_id, status="received", task_status_data={"step": 1})
    bad_sid = push_bad(one_shard, bad.task_id)
    task_update_push(task_id=good.task_id, status="completed", task_status_data={"ok": True})
    last_sid = update_stream.push(StatusUpdate(task_id=other.task_id, status="failed"))
    with django_capture_on_commit_callbacks(execute=True):
        assert run_once() == 5  # one batch: the good ones next to the bad one
        assert run_once() == 0

    # The good entries are applied; the bad one changed nothing.
    good.refresh_from_db()
    bad.refresh_from_db()
    other.refresh_from_db()
    assert (good.task_status, good.task_status_data) == ("completed", {"ok": True})
    assert (bad.task_status, bad.task_status_data) == ("received", {"step": 1})
    assert other.task_status == "failed"
    # The offset moved past all of them, and they left the update stream.
    assert StreamOffset.objects.get(shard=0).last_id == last_sid
    assert update_stream.backlog() == 0

    # The dead letter: where it came from, what it said, exactly, and why it was refused.
    assert dead_letters.count() == 1
    [letter] = dead_letters.list()
    assert (letter.shard, letter.stream_id, letter.task_id, letter.status) == (0, bad_sid, bad.task_id, "completed")
    assert letter.error.startswith("the database refused it: ")
    assert len(letter.error) > len("the database refused it: ") + 10
    assert letter.raw == (
        (b"task_id", bad.task_id.encode()),
        (b"status", b"completed"),
        (b"source", b"test"),
        (b"data", BAD_DATA),
    )
    assert not letter.raw_missing
    assert dead_letters.get(letter.id) == letter

    # /metrics: the gauge and the counter.
    metrics = scrape(Client())
    assert metrics["taskhub_dead_letters"] == 1
    assert metrics["taskhub_dead_lettered_total"] == 1

    # The dashboard: the count, flagged, linking to the admin page.
    resp = staff.get("/admin/dashboard/")
    assert resp.status_code == 200
    assert resp.context["stream"].dead_letters == 1
    item = re.search(r'<li id="dead-letters" class="([^"]*)">(.*?)</li>', resp.content.decode(), re.S)
    assert item is not None
    assert item.group(1) == "bad"
    assert f'href="{LIST_URL}"' in item.group(2) and '<span class="value">1</span>' in item.group(2)

    # The admin: the list and the detail, the raw entry escaped.
    html = staff.get(LIST_URL).content.decode()
    for needle in (letter.id, bad.task_id, bad_sid, "data = {&quot;x&quot;:NaN}", "the database refused it"):
        assert needle in html
    assert '{"x":NaN}' not in html
    resp = staff.get(f"{LIST_URL}{letter.id}/")
    assert resp.status_code == 200
    assert resp.context["letter"] == letter
    assert "{&quot;x&quot;:NaN}" in resp.content.decode()
    assert staff.get(f"{LIST_URL}1-1/").status_code == 404

    # Discard: a POST without the CSRF token is refused and changes nothing; with it, the letter goes.
    assert staff.post(DISCARD_URL, {"id": letter.id}).status_code == 403
    assert dead_letters.count() == 1
    resp = staff.post(DISCARD_URL, {"id": letter.id, "csrfmiddlewaretoken": csrf_token(staff)}, follow=True)
    assert resp.status_code == 200
    assert "Discarded 1 dead letter." in resp.content.decode()
    assert dead_letters.count() == 0 and dead_letters.get(letter.id) is None
    assert one_shard.hlen(keys.dead_letter_origins_key()) == 0
    assert scrape(Client())["taskhub_dead_letters"] == 0
    assert staff.get("/admin/dashboard/").context["stream"].dead_letters == 0


def test_a_batch_rolled_back_after_dead_lettering_leaves_one_dead_letter(
    one_shard: redis.Redis, django_capture_on_commit_callbacks: Capture
) -> None:
    """The commit failing after the dead letter was written: the batch runs again, and the same
    entry is dead-lettered once, and counted once."""

    class CommitFailed(Exception):
        pass

    task, _ = task_create(task_type="t")
    bad_sid = push_bad(one_shard, task.task_id)
    ensure_offsets()
    with django_capture_on_commit_callbacks(execute=True):
        # What apply_shard_batch does inside its transaction, then the commit fails: nothing is
        # trimmed and the offset stays, so the next pass reads the same batch again.
        with pytest.raises(CommitFailed), transaction.atomic():
            _, dead = _apply_guarded(0, update_stream.read_after(0, "0-0", 10))
            assert dead == 1
            raise CommitFailed
        assert StreamOffset.objects.get(shard=0).last_id == "0-0"
        assert dead_letters.count() == 1
        assert run_once() == 1
    assert dead_letters.count() == 1
    assert StreamOffset.objects.get(shard=0).last_id == bad_sid
    assert scrape(Client())["taskhub_dead_lettered_total"] == 1


def test_add_is_idempotent_per_original_entry(one_shard: redis.Redis) -> None:
    task, _ = task_create(task_type="t")
    push_bad(one_shard, task.task_id)
    [entry] = update_stream.read_after(0, "0-0", 10)
    first = dead_letters.add(0, entry, "refused")
    assert dead_letters.add(0, entry, "refused again") == first
    assert dead_letters.count() == 1
    letter = dead_letters.get(first)
    assert letter is not None and letter.error == "refused"
    # The same stream id in another shard is another entry.
    assert dead_letters.add(1, entry, "refused") != first
    assert dead_letters.count() == 2


def test_unreadable_entries_are_kept_byte_for_byte(one_shard: redis.Redis, staff: Client) -> None:
    key = keys.stream_key(0)
    # Not UTF-8, a control character, markup, and a field name given twice: all kept as they were.
    sid = one_shard.execute_command(  # type: ignore[no-untyped-call]
        "XADD", key, "*", "task_id", b"\xff\xfe", "status", "completed", "note", b"<b>\x01</b>", "note", "again"
    ).decode()
    assert run_once() == 1
    [letter] = dead_letters.list()
    assert letter.stream_id == sid and letter.error == UNREADABLE and letter.task_id == ""
    assert letter.raw == (
        (b"task_id", b"\xff\xfe"),
        (b"status", b"completed"),
        (b"note", b"<b>\x01</b>"),
        (b"note", b"again"),
    )
    html = staff.get(f"{LIST_URL}{letter.id}/").content.decode()
    assert r"\xff\xfe" in html and r"&lt;b&gt;\x01&lt;/b&gt;" in html and "<b>" not in html


def test_redis_refusing_the_dead_letter_aborts_the_batch(one_shard: redis.Redis) -> None:
    """Nothing is skipped unrecorded: the batch, good entries included, waits for Redis."""
    good, _ = task_create(task_type="t")
    bad, _ = task_create(task_type="t")
    task_update_push(task_id=good.task_id, status="completed")
    push_bad(one_shard, bad.task_id)
    one_shard.set(keys.dead_letter_key(), "not a stream")  # every XADD to it now fails (WRONGTYPE)
    with pytest.raises(redis.ResponseError):
        run_once()
    good.refresh_from_db()
    assert good.task_status == "pending"
    assert StreamOffset.objects.get(shard=0).last_id == "0-0"
    assert update_stream.backlog() == 2
    one_shard.delete(keys.dead_letter_key())
    assert run_once() == 2
    good.refresh_from_db()
    assert good.task_status == "completed"
    assert dead_letters.count() == 1


def test_discard_all_keeps_what_arrived_after_the_page(one_shard: redis.Redis, staff: Client) -> None:
    tasks = [task_create(task_type="t")[0] for _ in range(3)]
    for t in tasks[:2]:
        push_bad(one_shard, t.task_id)
    run_once()
    token = csrf_token(staff)
    page = staff.get(LIST_URL).context["page"]
    assert page.total == 2
    push_bad(one_shard, tasks[2].task_id)  # arrives after the operator looked
    run_once()
    data = {"all": "1", "upto": page.newest_id, "csrfmiddlewaretoken": token}
    resp = staff.post(DISCARD_URL, data, follow=True)
    assert "Discarded 2 dead letters." in resp.content.decode()
    [left] = dead_letters.list()
    assert left.task_id == tasks[2].task_id
    assert GlobalTask.objects.filter(task_status="pending").count() == 3
    assert dead_letters.discard_all() == 1 and dead_letters.count() == 0


def test_the_pages_are_for_staff_only(client: Client, one_shard: redis.Redis) -> None:
    for url in (LIST_URL, f"{LIST_URL}1-1/"):
        resp = client.get(url)
        assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/")
    client.force_login(User.objects.create_user("someone", password="pw-for-tests-only"))
    resp = client.post(DISCARD_URL, {"all": "1", "upto": "9-9"})
    assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/")


def test_the_admin_index_links_the_dead_letters(staff: Client, one_shard: redis.Redis) -> None:
    assert f'href="{LIST_URL}"'.encode() in staff.get("/admin/").content


def test_the_list_page_when_empty_and_when_redis_is_down(staff: Client, one_shard: redis.Redis, settings: Any) -> None:
    resp = staff.get(LIST_URL)
    assert resp.status_code == 200 and "No dead letters." in resp.content.decode()
    assert resp.context["page"].total == 0
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    resp = staff.get(LIST_URL)
    assert resp.status_code == 200 and "Redis unavailable" in resp.content.decode()
    assert staff.get("/admin/dashboard/").context["stream"].dead_letters is None
