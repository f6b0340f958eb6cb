"""The Celery application: Django settings with the CELERY_ prefix configure it."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portmon.settings")

app = Celery("portmon")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
