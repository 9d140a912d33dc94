"""gunicorn settings for `make bench`: the same file for the baseline and the service.

Both apps get exactly these settings (the app and `--bind` come from the command line), so a
difference in the figures is a difference between the apps. Not `deploy/gunicorn.conf.py`: that is
production's (gthread, 4 threads, an access log on stdout, a configuration check of the service in
the master), and half of it would have to be overridden or would not apply to the baseline. The
issue's figures are for 2 sync workers each; `--workers` and `--worker-class` of `bench/run.py`
change both apps alike.
"""

from __future__ import annotations

import os

workers = int(os.environ.get("BENCH_WORKERS", "2"))
worker_class = os.environ.get("BENCH_WORKER_CLASS", "sync")
threads = int(os.environ.get("BENCH_THREADS", "1"))
# No access log for either app: writing one is not the request path being compared.
accesslog = None
errorlog = "-"
loglevel = "warning"
# Long enough for an app stopped while another is measured (bench/run.py `alone`: up to a minute and a half):
# with the default 30 s, the master would take its workers' silence for a hang and restart them.
timeout = 300
graceful_timeout = 5
# The load tool opens many connections at once at 8 connections with sync workers (which close
# each connection after its answer); the default backlog is ample, said here to be explicit.
backlog = 2048
control_socket_disable = True
