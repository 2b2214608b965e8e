from django.apps import AppConfig


class WorkersConfig(AppConfig):
    """The node's app: installed by taskhub/settings_node.py only, never by the server."""

    name = "workers"
    verbose_name = "Node workers"

    def ready(self) -> None:
        # Signal receivers report each run's status from the worker process.
        from workers.node import signals  # noqa: F401
        from workers.protocol import specs

        # Every type this node can run, including those registered by TASKHUB_HANDLER_MODULES.
        specs.load()
