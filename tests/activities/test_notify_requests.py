"""Notify (log + real webhook) and request validation."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from relman.activities.notify import NotifyActivities
from relman.activities.requests import RequestActivities
from relman.contracts import ErrorType, Notification, ReleaseRequest

from .greeter_support import example_catalog


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook?token=s3cret", received
    server.shutdown()


NOTE = Notification(
    release_id="release-greeter-1.1.0",
    step="notify:cab",
    event="gate.opened",
    message="CAB vote",
    recipients=["alice"],
)


async def test_webhook_receives_the_notification(webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook
    await ActivityEnvironment().run(NotifyActivities(url).notify, NOTE)
    assert received == [NOTE.model_dump(mode="json")]


async def test_webhook_failure_is_logged_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    await ActivityEnvironment().run(NotifyActivities("http://127.0.0.1:9/hook?token=s3cret").notify, NOTE)
    out = capsys.readouterr().out
    assert "notify.webhook_failed" in out and "s3cret" not in out
    await ActivityEnvironment().run(NotifyActivities(None).notify, NOTE)  # log only


def request(service: str) -> ReleaseRequest:
    return ReleaseRequest(service=service, version="1.1.0", requested_by="pat", title="t", commit="abc1234")


async def test_validate_request(tmp_path: Path) -> None:
    acts = RequestActivities(example_catalog(tmp_path))
    profile = await ActivityEnvironment().run(acts.validate_request, request("greeter"))
    assert profile.service == "greeter" and profile.trust.quorum == 2
    with pytest.raises(ApplicationError) as exc:
        await ActivityEnvironment().run(acts.validate_request, request("checkout"))
    assert exc.value.type == ErrorType.UNKNOWN_SERVICE and exc.value.non_retryable
    assert "checkout" in exc.value.message and "greeter" in exc.value.message
