#!/bin/sh
# Start Mosquitto once the hub has written its auth files, and reload it whenever they change.
set -eu
until [ -s /auth/passwd ] && [ -s /auth/acl ]; do sleep 1; done
mosquitto -c /mosquitto/config/mosquitto.conf &
pid=$!
last=$(stat -c %Y /auth/passwd /auth/acl)
while kill -0 "$pid" 2>/dev/null; do
  sleep 2
  now=$(stat -c %Y /auth/passwd /auth/acl)
  if [ "$now" != "$last" ]; then kill -HUP "$pid"; last=$now; fi
done
wait "$pid"
