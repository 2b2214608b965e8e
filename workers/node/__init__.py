"""What runs on a node: the Celery tasks, the runner and its exactly-once guard, fan-out, status
reports, heartbeats. It needs the broker only, never the database, and imports nothing from the server
(tasks_app); it runs under taskhub/settings_node.py, which has no database at all."""
