"""Settings for the django-celery-results peer's worker (bench.dcr_celery): that app alone.

Same database as taskhub's bench, but every connection's search_path is the schema
bench.dcr_celery.SCHEMA, so `manage.py migrate` makes django-celery-results' tables (and its own
django_migrations) there and never touches taskhub's. Connections are kept for 60 s, as
taskhub's production default on PostgreSQL: Django's default (0) would reconnect for every task
and make the peer weaker than it need be; no health-check query per task, for the same reason.
"""

import environ

from bench.dcr_celery import APPLICATION_NAME, SCHEMA

env = environ.Env()

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")
INSTALLED_APPS = ["django_celery_results"]
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = 60
DATABASES["default"]["OPTIONS"] = {"options": f"-c search_path={SCHEMA}", "application_name": APPLICATION_NAME}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
