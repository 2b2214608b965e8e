"""gunicorn settings for the production web process (`gunicorn taskhub.wsgi:application`).

gunicorn reads ./gunicorn.conf.py from its working directory by itself, so the Docker image's CMD and the
compose `web` service both get these. The command line and GUNICORN_CMD_ARGS still override any of them.
"""

import os

# Inside a container the published port is the only way in, so listening on every interface is the point.
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# WEB_CONCURRENCY is the usual knob (gunicorn itself honours it too); size it to the container's CPUs.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threaded workers: a long poll (GET /api/v1/tasks/<id>/?wait=, up to 60 s) holds one thread, not a whole
# process, so the other threads go on serving everything else. TASKHUB_LONGPOLL_SLOTS (taskhub/settings.py)
# caps the waits per process below this thread count; its default follows GUNICORN_THREADS.
worker_class = "gthread"
# Event streams (GET /api/v1/events/) stay open for minutes: each process gets TASKHUB_EVENT_STREAMS threads
# more for them (the view refuses streams beyond that with a 429), so they never take these eight. A
# stream waits on a queue and holds no database connection once it has caught up.
threads = int(os.environ.get("GUNICORN_THREADS", "8")) + int(os.environ.get("TASKHUB_EVENT_STREAMS", "64"))
# PostgreSQL connections come from a pool per process (taskhub/settings.py), sized for the threads that serve
# requests, plus the event stream's tail and one spare; a stream holds one only while it catches up. So the
# database sees at most WEB_CONCURRENCY x TASKHUB_DB_POOL_SIZE connections from the web, whatever the
# thread count. Set here, before the workers start and read the settings.
os.environ.setdefault("TASKHUB_DB_POOL_SIZE", str(int(os.environ.get("GUNICORN_THREADS", "8")) + 2))
# With gthread this no longer bounds one request: the worker's main thread heartbeats while the request
# threads work, so a 60 s wait is never killed. It only catches a worker whose main loop is stuck.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# On SIGTERM (docker stop) a worker finishes the request in hand; below compose's stop_grace_period.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
# Logs go to stdout/stderr, where `docker compose logs` finds them.
accesslog = "-"
errorlog = "-"
# Worker heartbeats on a tmpfs: a container's overlay filesystem can stall them into false timeouts.
if os.path.isdir("/dev/shm"):  # noqa: S108
    worker_tmp_dir = "/dev/shm"  # noqa: S108
