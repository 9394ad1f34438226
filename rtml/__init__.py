"""The ``rtml`` command: local infrastructure, the supervisor, status, and each service's commands."""
