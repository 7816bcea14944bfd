"""Notifications: e-mail through Django's mail settings and a Slack-compatible JSON webhook, routed
by target label. Rows are the outbox; a task delivers them after commit, so a failing channel
never blocks or breaks the loop."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from healing.models import CacheTarget, Notification, NotificationRoute

log = logging.getLogger(__name__)


def notify(*, event: str, target: CacheTarget | None, text: str, payload: dict[str, Any] | None = None) -> list[Notification]:
    """Queue a notification on every route that wants it; delivered after the transaction commits."""
    labels = set(target.labels or []) if target else set()
    made = []
    for route in NotificationRoute.objects.filter(enabled=True):
        if route.label != "*" and route.label not in labels:
            continue
        if route.events and event not in route.events:
            continue
        made.append(Notification.objects.create(route=route, event=event, target=target, text=text[:2000],
                                                payload=payload or {}, created_at=timezone.now()))
    for note in made:
        transaction.on_commit(lambda pk=note.pk: _enqueue(pk))
    return made


def _enqueue(notification_id: int) -> None:
    from healing.tasks import deliver_notification

    try:
        deliver_notification.delay(notification_id)
    except Exception:  # the broker being down must not break the change that notified
        log.exception("could not enqueue a notification", extra={"notification": notification_id})


def deliver(notification_id: int) -> bool:
    """Send one notification on its route's channels. Returns True when every channel took it."""
    note = Notification.objects.select_related("route", "target").filter(pk=notification_id).first()
    if note is None or note.delivered_at:
        return True
    errors = []
    route = note.route
    subject = f"[aicache-healing] {note.text[:120]}"
    if route.emails:
        try:
            send_mail(subject, note.text, settings.DEFAULT_FROM_EMAIL, route.emails, fail_silently=False)
        except Exception as exc:
            errors.append(f"e-mail: {exc}")
    if route.webhook_url:
        body = json.dumps({"text": note.text, "event": note.event, "target": note.target.name if note.target else None, **note.payload}).encode()
        request = urllib.request.Request(route.webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=float(settings.HEALING["WEBHOOK_TIMEOUT_SECONDS"])) as response:
                if response.status >= 300:
                    errors.append(f"webhook: HTTP {response.status}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"webhook: {exc}")
    note.attempts += 1
    if errors:
        note.last_error = "; ".join(errors)[:300]
        log.warning("notification not delivered", extra={"notification": note.pk, "error": note.last_error})
    else:
        note.delivered_at = timezone.now()
    note.save(update_fields=["attempts", "last_error", "delivered_at"])
    return not errors
