from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Node workers"

    def ready(self) -> None:
        # Signal receivers report task status from every worker process.
        from workers import registry, signals  # noqa: F401

        # Every process (web, writers, nodes) knows every task type and completion hook, including
        # those registered by TASKHUB_HANDLER_MODULES.
        registry.load()
