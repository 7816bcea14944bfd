from celery import shared_task

from compliance.services import checkpoint_take


@shared_task(name="compliance.tasks.take_checkpoint", ignore_result=True)
def take_checkpoint() -> int | None:
    checkpoint = checkpoint_take()
    return checkpoint.seq if checkpoint else None
