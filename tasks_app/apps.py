from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    name = "tasks_app"
    verbose_name = "Global tasks DB"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tasks_app.families import registry
        from workers.protocol import specs

        # Every process of the server knows every task type (TASKHUB_HANDLER_MODULES included) and
        # every server half (TASKHUB_SERVER_MODULES): it validates, places, checks and records them.
        specs.load()
        registry.load()
