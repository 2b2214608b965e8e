"""Django's PostgreSQL backend with one change for the web's connection pool (see base.py)."""
