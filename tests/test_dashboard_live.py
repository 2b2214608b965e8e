"""The operator's dashboard, live: a real headless browser (Debian's chromium, driven through its
chromedriver) on the page served by gunicorn sees a task created and its status changed through the API,
from the event stream, without a reload; and the page is complete without JavaScript.

The browser is the distribution's: /usr/bin/chromium and /usr/bin/chromedriver, which scripts/test.sh
installs when missing. Selenium is pointed at both, so selenium-manager never tries to download a browser
(nothing can be fetched here). Without them the browser test is skipped, or fails under CI=true.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import OPERATOR_PASSWORD, ROOT
from tests.helpers import free_port, start_gunicorn, stop, wait_until

URL = "/admin/dashboard/"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Long enough for a loaded machine; the page's own refresh is throttled to one a second.
LIVE_TIMEOUT = 30


# --- without JavaScript: what the server renders ----------------------------------------------------------


@pytest.fixture
def staff(client: Client) -> Client:
    client.force_login(User.objects.create_user("ops", password="pw-for-tests-only", is_staff=True))
    return client


def status_count(html: str, status: str) -> int:
    """The figure in the dashboard's "Tasks by status" row for `status`."""
    section = html[html.index('id="tasks-by-status"') :]
    found = re.search(rf"task_status={status}\">{status}</a></th>\s*<td[^>]*>(\d+)</td>", section)
    assert found, section[:2000]
    return int(found.group(1))


@pytest.mark.django_db
def test_the_page_is_complete_without_javascript(staff: Client) -> None:
    from tasks_app.tasks.services import task_create
    from tasks_app.tasks.transitions import StatusUpdate, task_transition

    done, _ = task_create(task_type="nojs_report")
    task_transition(update=StatusUpdate(done.task_id, "completed"))
    task_create(task_type="nojs_report")

    html = staff.get(URL).content.decode()
    # Every live section is rendered by the server, with its figures, inside the container the script
    # refreshes; the script is loaded, deferred, from the static files.
    for section in (
        "summary",
        "throughput",
        "tasks-by-status",
        "failures-by-type",
        "failures-by-node",
        "tasks-by-type",
        "nodes",
    ):
        assert f'id="{section}"' in html, section
    assert html.index('id="live-sections"') < html.index('id="summary"') < html.index('id="nodes"')
    assert "<svg" in html and "nojs_report" in html
    assert (status_count(html, "completed"), status_count(html, "pending")) == (1, 1)
    assert '<script src="/static/taskhub/dashboard.js" defer></script>' in html
    assert 'data-events-url="/api/v1/events/"' in html and 'data-fragment-url="/admin/dashboard/?fragment=live"' in html
    # Without the script the reload hint stays and the live parts stay hidden.
    assert "Reload the page to refresh." in html
    assert re.search(r'id="live-status" hidden', html) and re.search(r'id="live-events" hidden', html)


@pytest.mark.django_db
def test_the_live_fragment_is_the_sections_alone_with_the_same_figures(staff: Client) -> None:
    from tasks_app.tasks.services import task_create

    task_create(task_type="fragment_report")
    page = staff.get(URL).content.decode()
    resp = staff.get(URL, {"fragment": "live"})
    assert resp.status_code == 200
    assert "no-cache" in resp["Cache-Control"] or "no-store" in resp["Cache-Control"]
    fragment = resp.content.decode()
    assert "<html" not in fragment and "<script" not in fragment and 'id="live-sections"' not in fragment
    for section in ("summary", "throughput", "tasks-by-status", "tasks-by-type", "nodes"):
        assert f'id="{section}"' in fragment, section
    assert status_count(fragment, "pending") == status_count(page, "pending") == 1
    assert "fragment_report" in fragment


@pytest.mark.django_db
def test_the_live_fragment_is_staff_only(client: Client) -> None:
    resp = client.get(URL, {"fragment": "live"})
    assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/")


def test_the_script_escapes_what_the_stream_sends() -> None:
    """Event fields reach the page as text nodes, never as markup."""
    source = (ROOT / "tasks_app/static/taskhub/dashboard.js").read_text()
    assert "textContent" in source
    # The only markup set is the server's own fragment.
    assert source.count("innerHTML") == 1 and "sections.innerHTML = html" in source
    assert "insertAdjacentHTML" not in source and "document.write" not in source


# --- with JavaScript: a real browser on the real server ---------------------------------------------------


def browser_or_skip() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (requirements-dev.txt)")
    if not missing:
        return
    why = f"the dashboard's browser test needs {', '.join(missing)} (Debian's chromium and chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {why}")
    pytest.skip(why)


@dataclass
class Server:
    base_url: str
    log: Path


@pytest.fixture
def server(child_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """gunicorn with the shipped gunicorn.conf.py, on this test's database."""
    port = free_port()
    env = {k: v for k, v in child_env.items() if k not in ("GUNICORN_CMD_ARGS", "WHITENOISE_USE_FINDERS")}
    env.update(GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1", GUNICORN_GRACEFUL_TIMEOUT="2")
    log = tmp_path / "gunicorn.log"
    base_url = f"http://127.0.0.1:{port}"
    proc = start_gunicorn(env, log, base_url)
    try:
        yield Server(base_url, log)
    finally:
        stop(proc)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    # The distribution's browser and driver, named outright: selenium-manager then has nothing to fetch.
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for chromium's sandbox
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver: Any = webdriver.Chrome(service=service, options=options)  # Any: get_log is untyped
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def explained(driver: Any, server: Server) -> Iterator[None]:
    """On a failure, what the browser and the server saw (fixtures do not see a test's exception)."""
    try:
        yield
    except BaseException:
        state = driver.execute_script("const s = document.getElementById('live-state'); return s && s.outerHTML")
        print("page:", driver.current_url, state)
        print("browser console:", json.dumps(driver.get_log("browser"), indent=1)[-5000:])
        print("gunicorn:", server.log.read_text(errors="replace")[-5000:])
        raise


def page_status_count(driver: Any, status: str) -> int | None:
    """The page's current figure for `status` in "Tasks by status", as the browser shows it."""
    text = driver.execute_script(
        """const link = [...document.querySelectorAll('#tasks-by-status th a')]
               .find(a => a.textContent.trim() === arguments[0]);
           return link ? link.closest('tr').querySelector('td').textContent.trim() : null;""",
        status,
    )
    return int(text) if text is not None else None


def section_text(driver: Any, section: str) -> str:
    """A live section's text, read in one script: a WebElement found first could be swapped out by a
    refresh before its text is read."""
    return str(driver.execute_script("return document.getElementById(arguments[0]).innerText", section))


def page_events(driver: Any, task_id: str) -> list[tuple[str, str]]:
    """The live event list's entries for `task_id`, oldest first: (kind, text)."""
    rows = driver.execute_script(
        """return [...document.querySelectorAll('#live-event-list li')]
               .filter(li => li.dataset.taskId === arguments[0])
               .map(li => [li.dataset.kind, li.textContent]);""",
        task_id,
    )
    return [(str(kind), str(text)) for kind, text in reversed(rows)]


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_dashboard_shows_a_new_tasks_status_change_without_a_reload(
    browser: Any, server: Server, operator: Any, operator_token: str
) -> None:
    from selenium.webdriver.common.by import By

    with explained(browser, server):
        # The script is served by the app server itself (whitenoise), as under `make run` and in the image.
        js = httpx.get(f"{server.base_url}/static/taskhub/dashboard.js", timeout=10)
        assert js.status_code == 200 and "EventSource" in js.text, js.text[:300]

        # The operator logs in through the admin's own form, as a person would.
        browser.get(f"{server.base_url}/admin/login/?next={URL}")
        browser.find_element(By.NAME, "username").send_keys(operator.username)
        browser.find_element(By.NAME, "password").send_keys(OPERATOR_PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait_until(lambda: browser.current_url.endswith(URL), 15, "the login to land on the dashboard")
        assert browser.find_element(By.ID, "nodes")  # the dashboard, not the login form again

        wait_until(
            lambda: browser.execute_script("return document.getElementById('live-state').dataset.state") == "live",
            LIVE_TIMEOUT,
            "the page to follow the event stream",
        )
        assert browser.find_element(By.ID, "live-status").is_displayed()
        hint = "return getComputedStyle(document.querySelector('#as-of .th-static-note')).display"
        assert browser.execute_script(hint) == "none"  # the reload hint is gone
        assert (page_status_count(browser, "pending"), page_status_count(browser, "cancelled")) == (0, 0)
        # Anything the page holds survives only if the page is never loaded again.
        browser.execute_script("window.__marker = 1")

        api = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Token {operator_token}"}, timeout=10)
        with api:
            created = api.post("/api/v1/tasks/", json={"task_type": "dashboard_live", "task_data": {"k": "v"}})
            assert created.status_code == 201, created.text
            task_id = str(created.json()["task_id"])
            assert created.json()["task_status"] == "pending"

            wait_until(lambda: page_events(browser, task_id), LIVE_TIMEOUT, "the creation in the page's event list")
            assert page_events(browser, task_id)[0][0] == "created"
            wait_until(lambda: page_status_count(browser, "pending") == 1, LIVE_TIMEOUT, "the pending count to reach 1")
            assert "dashboard_live" in section_text(browser, "tasks-by-type")

            cancelled = api.post(f"/api/v1/tasks/{task_id}/cancel/")
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["task_status"] == "cancelled"
            history = api.get(f"/api/v1/tasks/{task_id}/history/")
            assert [row["to_status"] for row in history.json()][-1] == "cancelled", history.text

        wait_until(
            lambda: any(kind == "status" for kind, _ in page_events(browser, task_id)),
            LIVE_TIMEOUT,
            "the status change in the page's event list",
        )
        change = next(text for kind, text in page_events(browser, task_id) if kind == "status")
        assert "pending \u2192 cancelled" in change and task_id in change, change
        wait_until(
            lambda: (page_status_count(browser, "pending"), page_status_count(browser, "cancelled")) == (0, 1),
            LIVE_TIMEOUT,
            "the counters to show the task cancelled",
        )
        summary = section_text(browser, "summary")
        assert re.search(r"\b1\s*finished in the last hour", summary), summary
        # The same page all along: the counters changed in place.
        assert browser.execute_script("return window.__marker") == 1
        assert int(browser.find_element(By.ID, "live-sections").get_attribute("data-refreshes")) >= 2
