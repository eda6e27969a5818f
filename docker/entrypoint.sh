#!/bin/sh
# Entry point of the Fleetsim image: `fleetsim "$@"`.
#
# Scaled services (`docker compose up --scale bridge=3`) share one environment, but every MQTT
# client needs its own client id (a duplicate id kicks the other client off the broker). Unless
# set explicitly, the bridge's id gets the container's hostname, which stays the same across
# restarts of that container, so its persistent session (and the messages queued in it) resumes.
set -eu
if [ "${1:-}" = "bridge" ] && [ -z "${FLEETSIM_BRIDGE__CLIENT_ID:-}" ]; then
    FLEETSIM_BRIDGE__CLIENT_ID="fleetsim-bridge-$(hostname)"
    export FLEETSIM_BRIDGE__CLIENT_ID
fi
exec fleetsim "$@"
