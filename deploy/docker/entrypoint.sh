#!/bin/sh
# Entrypoint of the taskqueue-backend image: the first argument names what to run.
#
#   worker [celery worker options]   a stock Celery worker of $CELERY_APP
#   control-plane [options]          admin UI, REST API and /metrics on 0.0.0.0:${PORT:-8080}
#   migrate [options]                create or upgrade the result tables at $DATABASE_URL
#   anything else                    run as given, e.g. `taskqueue token new NAME ROLE`
#
# Every branch execs, so the program replaces this shell and receives the container's stop
# signal itself: SIGTERM starts Celery's warm shutdown (running tasks finish, prefetched
# messages go back to their queue) and gunicorn's graceful stop.
set -eu

usage() {
    cat >&2 <<'USAGE'
usage: worker [CELERY WORKER OPTIONS]   run `celery -A $CELERY_APP worker ...`
       control-plane [OPTIONS]          run `taskqueue control-plane --bind 0.0.0.0:$PORT ...`
       migrate [OPTIONS]                run `taskqueue db upgrade ...` against $DATABASE_URL
       COMMAND [ARGS...]                run COMMAND, e.g. `taskqueue token new admin admin`
USAGE
}

if [ "$#" -eq 0 ]; then
    usage
    exit 64
fi

case "$1" in
    worker)
        shift
        if [ -z "${CELERY_APP:-}" ]; then
            echo "entrypoint: worker needs CELERY_APP, the Celery app to run" \
                "(a module or module:app, e.g. examples.proj)" >&2
            exit 64
        fi
        exec celery -A "$CELERY_APP" worker "$@"
        ;;
    control-plane)
        shift
        exec taskqueue control-plane --bind "0.0.0.0:${PORT:-8080}" "$@"
        ;;
    migrate)
        shift
        exec taskqueue db upgrade "$@"
        ;;
    help | -h | --help)
        usage
        exit 0
        ;;
    *)
        exec "$@"
        ;;
esac
