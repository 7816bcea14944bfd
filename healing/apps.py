from django.apps import AppConfig


class HealingConfig(AppConfig):
    name = "healing"
    verbose_name = "Cache healing"

    def ready(self) -> None:
        from config.celery import ensure_broker_dirs

        ensure_broker_dirs()
