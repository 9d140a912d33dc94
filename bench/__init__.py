"""`make bench`: the service against a bare Flask baseline, under the same gunicorn, driven by wrk (see run.py)."""
