"""Settings of the server tests/test_schemathesis.py starts: the server's own, with Celery's Redis keys
(the node queues an executed task is published to) under the test's key prefix, so the test's cleanup
of that prefix removes them too."""

from taskhub.settings import *  # noqa: F403
from taskhub.settings import CELERY_BROKER_TRANSPORT_OPTIONS, TASKHUB_STREAM_PREFIX

CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "global_keyprefix": f"{TASKHUB_STREAM_PREFIX}:celery:",
}
