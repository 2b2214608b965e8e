from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    name = "tasks_app"
    verbose_name = "Global tasks DB"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks as django_checks
        from django.db.backends.signals import connection_created

        from tasks_app import checks, sqlite_files
        from tasks_app.families import registry
        from workers.protocol import specs

        # `check --deploy` flags the public dev key and a wildcard host, which Django's own checks let pass.
        django_checks.register(checks.secret_key_is_not_public, django_checks.Tags.security, deploy=True)
        django_checks.register(checks.allowed_hosts_has_no_wildcard, django_checks.Tags.security, deploy=True)
        # Not only deploy: every management command (the writers, the scheduler, migrate) stops on it.
        django_checks.register(checks.latency_objectives_name_task_types)
        # Before any connection opens: the SQLite files are made 0600 as each process connects.
        connection_created.connect(sqlite_files.make_private, dispatch_uid="taskhub.sqlite_files")

        # Every process of the server knows every task type (TASKHUB_HANDLER_MODULES included) and
        # every server half (TASKHUB_SERVER_MODULES): it validates, places, checks and records them.
        specs.load()
        registry.load()
