"""The web console's pages, JSON API and live stream against a real Redis and a real worker."""

from __future__ import annotations

import json
import re
import socket

import pytest
from celery.result import AsyncResult
from tornado.iostream import IOStream
from tornado.testing import gen_test

from interactive_celery import AWAITING_OPERATOR, OperatorAPI
from tests.conftest import running_worker
from tests.helpers import wait_incident_state, wait_state
from tests.web_support import ALICE_TOKEN, Browser, PartnerDown, WebCase, failing_task, xsrf_from

XSS = '<script>window.pwned=1</script><img src=x onerror="alert(1)">'


class TestPages(WebCase):
    conf = {"interactive_flower_url": "http://flower.example:5555"}

    def setUp(self):
        super().setUp()
        self.state: dict = {}
        self.task = failing_task(self.celery, self.state)  # registered before the worker starts

    def park(self, message: str = "partner API is down", batch="b-17"):
        """Park a real failure: an operator is online, a real worker runs the task and it fails."""
        OperatorAPI(self.celery, "alice").heartbeat()
        result = self.task.delay(batch, message=message)
        wait_state(result, AWAITING_OPERATOR)
        return result

    def test_user_controlled_text_is_shown_as_text(self):
        """A failure whose message and arguments hold markup appears escaped on the list, the detail
        page and the live fragments, and unchanged (as JSON data) in the API."""
        with running_worker(self.celery):
            result = self.park(message=f"bad reply {XSS}", batch=XSS)
        browser = Browser(self)
        browser.login()
        for path in ("/", "/partials/incidents", f"/incident/{result.id}", f"/partials/incident/{result.id}"):
            html = browser.fetch(path).body.decode()
            assert result.id in html, path
            assert "<script>window.pwned" not in html and "<img src=x" not in html, path
            assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html, path
        detail = browser.fetch(f"/incident/{result.id}").body.decode()
        assert 'href="http://flower.example:5555/task/' + result.id in detail
        response, body = self.api_get(f"/api/incidents/{result.id[:10]}")
        assert response.headers["Content-Type"].startswith("application/json")
        assert body["exc_message"] == f"bad reply {XSS}"
        assert b"</script>" not in response.body  # json_encode writes <\/script>

    def test_list_and_detail_show_what_an_operator_needs(self):
        """The list shows task, exception, try count and time left; the detail page adds redacted
        arguments, the traceback, the try history and the audit trail."""
        with running_worker(self.celery):
            result = self.park(message="orders.csv has not arrived")
            browser = Browser(self)
            browser.login()
            html = browser.fetch("/").body.decode()
            row = re.search(rf'<tr class="incident" data-id="{result.id}".*?</tr>', html, re.S).group(0)
            assert "sync_partner" in row and "PartnerDown" in row and "orders.csv has not arrived" in row
            assert re.search(r'data-until="[^"]+Z">\d+m', row), row  # time left, in minutes
            detail = browser.fetch(f"/incident/{result.id}").body.decode()
            assert "Traceback of try 1" in detail and "raise PartnerDown(message)" in detail
            assert 'data-decision="retry"' in detail and 'data-decision="fail"' in detail
            assert 'data-decision="ignore"' in detail
            trail = detail[detail.index("Audit trail"):]
            assert "try 1 started" in trail and "try 1 failed" in trail

    def test_retry_through_the_page_finishes_the_flow(self):
        """A signed-in operator confirms Retry on the page; the worker re-runs the task under the same id,
        the flow succeeds, and the page says who decided and which worker applied it."""
        with running_worker(self.celery):
            result = self.park()
            self.state["fixed"] = True
            browser = Browser(self)
            browser.login()
            token = xsrf_from(browser.fetch(f"/incident/{result.id}").body.decode())
            response = browser.fetch(f"/incident/{result.id}/retry", method="POST",
                                     form={"_xsrf": token, "confirm": "yes", "reason": "partner is back"})
            assert response.code == 303 and response.headers["Location"] == f"/incident/{result.id}"
            assert AsyncResult(result.id, app=self.celery).get(timeout=30) == "synced b-17"
            page = browser.fetch(f"/incident/{result.id}").body.decode()
        assert re.search(r"Retry recorded by carol; (applied by|not applied yet)", page)
        trail = page[page.index("Audit trail"):]
        assert "decision: retry" in trail and "carol" in trail and "partner is back" in trail
        incident = wait_incident_state(OperatorAPI(self.celery, "alice"), result.id, "succeeded")
        assert incident["decided_by"] == "carol" and incident["reason"] == "partner is back"

    def test_unconfirmed_post_asks_for_confirmation(self):
        """A decision POST without confirm=yes (a browser without script) decides nothing and shows a
        confirmation form instead."""
        with running_worker(self.celery):
            result = self.park()
            browser = Browser(self)
            browser.login()
            token = xsrf_from(browser.fetch(f"/incident/{result.id}").body.decode())
            response = browser.fetch(f"/incident/{result.id}/fail", method="POST", form={"_xsrf": token})
            assert response.code == 200 and b'name="confirm" value="yes"' in response.body
            assert self.rclient.hget(self.keys.incident(result.id), "state") == "open"

    def test_lost_race_shows_the_winner(self):
        """When bob (say, in the CLI) decided first, alice's click shows bob's decision, not an error
        page; the JSON API answers 409 with the winning decision."""
        with running_worker(self.celery):
            result = self.park()
            OperatorAPI(self.celery, "bob").fail(result.id, reason="known outage", wait=0)
            browser = Browser(self)
            browser.login()
            token = xsrf_from(browser.fetch(f"/incident/{result.id}").body.decode())
            response = browser.fetch(f"/incident/{result.id}/retry", method="POST",
                                      form={"_xsrf": token, "confirm": "yes"})
            assert response.code == 303
            page = browser.fetch(response.headers["Location"]).body.decode()
            assert "Too late" in page and "fail by bob" in page and "known outage" in page
            response, body = self.api_post(f"/api/incidents/{result.id}/retry")
            assert response.code == 409 and body["error"]["code"] == "already_decided"
            assert body["error"]["existing_decision"]["decided_by"] == "bob"
            with pytest.raises(PartnerDown):
                AsyncResult(result.id, app=self.celery).get(timeout=30)

    def test_api_decision_uses_the_token_operator(self):
        """A bearer-token fail through the JSON API ends the flow FAILURE; an ``operator`` field in the
        body cannot change who decided."""
        with running_worker(self.celery):
            result = self.park()
            _, listed = self.api_get("/api/incidents?state=open")
            assert [i["id"] for i in listed["incidents"]] == [result.id]
            response, body = self.api_post(f"/api/incidents/{result.id}/fail",
                                           {"reason": "give up", "operator": "mallory", "wait": 10})
            assert response.code == 200 and body["operator"] == "alice" and body["recorded"]
            with pytest.raises(PartnerDown):
                AsyncResult(result.id, app=self.celery).get(timeout=30)
        incident = wait_incident_state(OperatorAPI(self.celery, "x"), result.id, "failed")
        assert incident["decided_by"] == "alice"
        _, history = self.api_get(f"/api/incidents/{result.id}/history")
        assert [t["outcome"] for t in history["tries"]] == ["failed"]
        _, audit = self.api_get("/api/audit?since=0")
        assert [(d["id"], d["operator"], d["decision"]) for d in audit["decisions"]] == [(result.id, "alice", "fail")]

    def test_ignore_takes_a_json_result(self):
        """Ignore through the API finishes the flow as SUCCESS with the given result."""
        with running_worker(self.celery):
            result = self.park()
            response, body = self.api_post(f"/api/incidents/{result.id}/ignore", {"result": {"rows": 0}, "wait": 10})
            assert response.code == 200, body
            assert AsyncResult(result.id, app=self.celery).get(timeout=30) == {"rows": 0}


class TestReadOnly(WebCase):
    read_only = True

    def test_read_only_console_has_no_buttons_and_refuses_decisions(self):
        """--read-only shows incidents without decision buttons and refuses decision POSTs."""
        state: dict = {}
        task = failing_task(self.celery, state)
        with running_worker(self.celery):
            OperatorAPI(self.celery, "alice").heartbeat()
            result = wait_state(task.delay("b-1"), AWAITING_OPERATOR)
            html = self.fetch(f"/incident/{result.id}", headers={"Authorization": f"Bearer {ALICE_TOKEN}"}).body
            assert result.id.encode() in html and b'data-decision="retry"' not in html
            response, body = self.api_post(f"/api/incidents/{result.id}/retry")
            assert response.code == 403 and body["error"]["code"] == "read_only"
            assert self.rclient.hget(self.keys.incident(result.id), "state") == "open"


async def open_events(port: int, token: str = ALICE_TOKEN, last_event_id: str | None = None) -> IOStream:
    """A raw HTTP/1.0 client on /api/events, returned once the ``ready`` event arrived."""
    stream = IOStream(socket.socket())
    await stream.connect(("127.0.0.1", port))
    resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
    await stream.write(f"GET /api/events HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                       f"{resume}\r\n".encode())
    head = await stream.read_until(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0] and b"text/event-stream" in head
    stream.caught_up = (await stream.read_until(b"event: ready\n")).decode()  # replayed before "ready"
    await stream.read_until(b"\n\n")
    return stream


async def next_event(stream: IOStream, kind: str) -> dict:
    while True:
        chunk = (await stream.read_until(b"\n\n")).decode()
        data = [line[6:] for line in chunk.splitlines() if line.startswith("data: ")]
        if data and json.loads(data[0]).get("type") == kind:
            return json.loads(data[0])


class TestLive(WebCase):
    @gen_test(timeout=60)
    async def test_open_event_stream_is_presence_and_delivers_new_failures(self):
        """With nobody else online, an open event stream alone makes a failure park (the page counts as
        its operator's presence), and the stream then delivers incident.opened and the decision."""
        task = failing_task(self.celery, {})
        stream = await open_events(self.get_http_port())
        assert self.rclient.zscore(self.keys.presence, "alice") is not None
        with running_worker(self.celery):
            result = task.delay("b-2")
            opened = await next_event(stream, "incident.opened")
            assert opened["id"] == result.id and opened["exc_type"] == "PartnerDown"
            await self.console.run(OperatorAPI(self.celery, "bob").fail, result.id, wait=0)
            decided = await next_event(stream, "incident.decided")
            assert decided["operator"] == "bob" and decided["decision"] == "fail"
        stream.close()

    @gen_test(timeout=60)
    async def test_reconnect_with_last_event_id_replays_what_was_missed(self):
        """A client that reconnects with Last-Event-ID (browsers do) gets the messages written while it
        was away exactly once: replayed before "ready", or live right after it when the server's
        follower had not read them yet."""
        task = failing_task(self.celery, {})
        stream = await open_events(self.get_http_port())
        with running_worker(self.celery):
            result = task.delay("b-4")
            opened = await next_event(stream, "incident.opened")
            stream.close()
            await self.console.run(OperatorAPI(self.celery, "bob").fail, result.id, reason="away", wait=0)
            stream = await open_events(self.get_http_port(), last_event_id=opened["stream_id"])
        assert f"id: {opened['stream_id']}" not in stream.caught_up
        replayed = [json.loads(line[6:]) for line in stream.caught_up.splitlines() if line.startswith("data: ")]
        decided = [e for e in replayed if e.get("type") == "incident.decided"]
        if not decided:
            decided = [await next_event(stream, "incident.decided")]
        assert [(e["operator"], e["reason"]) for e in decided] == [("bob", "away")]
        stream.close()


class TestLiveReadOnly(WebCase):
    read_only = True

    @gen_test(timeout=60)
    async def test_read_only_viewers_are_not_presence(self):
        """A read-only page is a wallboard: with only it open, a failure fails the plain Celery way."""
        task = failing_task(self.celery, {})
        stream = await open_events(self.get_http_port())
        assert self.rclient.zscore(self.keys.presence, "alice") is None
        with running_worker(self.celery):
            result = task.delay("b-3")
            with pytest.raises(PartnerDown):
                await self.console.run(result.get, timeout=30)
        stream.close()
