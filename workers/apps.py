from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Node workers"

    def ready(self) -> None:
        # Signal receivers report task status from every worker process.
        from workers import signals  # noqa: F401
