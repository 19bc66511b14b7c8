"""Notifications: a structured log event always, and a JSON POST to a webhook if configured.

Delivery problems are logged, never raised: a broken chat hook must not fail a release.
The webhook URL may carry a token, so it is never logged.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import structlog
from temporalio import activity

from relman.contracts import Activity, Notification

log = structlog.get_logger(__name__)


def _post(url: str, body: bytes, timeout: float) -> int:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "relman"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return int(resp.status)


class NotifyActivities:
    """Sends release notifications to the log and an optional webhook."""

    def __init__(self, webhook_url: str | None = None, timeout: float = 5.0) -> None:
        self.webhook_url = webhook_url or None
        self.timeout = timeout

    @activity.defn(name=Activity.NOTIFY)
    async def notify(self, note: Notification) -> None:
        """Log the event; POST it to the webhook; swallow (and log) delivery failures."""
        payload = note.model_dump(mode="json")
        log.info("notify", **{("notify_event" if k == "event" else k): v for k, v in payload.items()})
        if self.webhook_url is None:
            return
        try:
            status = await asyncio.to_thread(
                _post, self.webhook_url, json.dumps(payload).encode(), self.timeout
            )
            log.info("notify.webhook", key=note.idempotency_key, status=status)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # The reason names the failure, not the URL (which may hold a token).
            reason = getattr(exc, "code", None) or type(exc).__name__
            log.warning("notify.webhook_failed", key=note.idempotency_key, reason=str(reason))
