#!/bin/sh
# Container entry point: run one rtml service by name, or the rtml CLI.
#   rtml-service ingest|features|inference|monitor|rollout
#   rtml-service rtml <subcommand> ...
# exec hands PID 1 to Python, so SIGTERM reaches the service's graceful drain.
set -eu
usage() {
    echo "usage: rtml-service {ingest|features|inference|monitor|rollout} | rtml-service rtml <args>" >&2
}
if [ "$#" -lt 1 ]; then
    usage
    exit 64
fi
name="$1"
shift
case "$name" in
    ingest | features | inference | monitor | rollout)
        exec python -m "services.${name}" "$@"
        ;;
    rtml)
        exec python -m rtml "$@"
        ;;
    -h | --help | help)
        usage
        exit 0
        ;;
    *)
        echo "rtml-service: unknown service '${name}'" >&2
        usage
        exit 64
        ;;
esac
