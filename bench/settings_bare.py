"""Settings for the bench's baseline server: Django with no middleware and one app, same database.

Served the same way as production (`gunicorn taskhub.wsgi:application`, DJANGO_SETTINGS_MODULE
pointing here), so the only differences are what the request goes through.
"""

import environ

env = environ.Env()

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["tasks_app"]  # for GlobalTask, the model the ORM baseline inserts
# Read when tasks_app loads its task types at start-up (tasks_app/apps.py); none beyond the built-ins.
TASKHUB_HANDLER_MODULES: list[str] = []
TASKHUB_SERVER_MODULES: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.urls_bare"
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = 60  # as production's default on PostgreSQL
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
