#!/bin/sh
# A cron job (a new process every minute, or every second): approve a Terminate or Preempt
# that lists this VM, so the VM goes without waiting out its notice. The VM's name comes from
# instance metadata as text, as cron jobs on Azure usually ask it.
#
# Example: imds-replay run --trace terminate --speed 120 --expect approve -- \
#     sh -c 'while :; do sh examples/cron_handler.sh & sleep 1; done'
base="http://169.254.169.254/metadata"
name=$(curl -sf --noproxy '*' -H 'Metadata: true' \
  "$base/instance/compute/name?api-version=2021-12-13&format=text") || exit 1
doc=$(curl -sf --noproxy '*' -H 'Metadata: true' \
  "$base/scheduledevents?api-version=2020-07-01") || exit 1
# One event per line, then those that end this VM and still wait for their NotBefore.
printf '%s\n' "$doc" | sed 's/},{/}\n{/g' \
  | grep -E '"EventType":"(Terminate|Preempt)"' | grep -F "\"$name\"" \
  | grep '"EventStatus":"Scheduled"' | grep -o '"EventId":"[^"]*"' | cut -d'"' -f4 \
  | while read -r id; do
      curl -sf --noproxy '*' -H 'Metadata: true' -X POST \
        -d "{\"StartRequests\":[{\"EventId\":\"$id\"}]}" \
        "$base/scheduledevents?api-version=2020-07-01" >/dev/null \
        && echo "$name: approved $id"
    done
