# The benchmark gives every server the same gunicorn settings on the command
# line; this empty file keeps the project's gunicorn.conf.py (access log,
# worker recycling) out of the measurements.
