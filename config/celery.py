import os

from celery import Celery
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("aicache_healing")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _schedule(sender: Celery, **_: object) -> None:
    sender.add_periodic_task(
        settings.HEALING_DISPATCH_EVERY_SECONDS,
        sender.signature("healing.tasks.dispatch_due_checks"),
        name="dispatch due checks",
    )
    sender.add_periodic_task(
        settings.COMPLIANCE["CHECKPOINT_EVERY_SECONDS"],
        sender.signature("compliance.tasks.take_checkpoint"),
        name="sign a checkpoint of the audit chain",
    )


def ensure_broker_dirs() -> None:
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        path = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(key)
        if path:
            os.makedirs(path, exist_ok=True)
