#!/bin/sh
# A Scheduled Events handler in shell: poll http://169.254.169.254 once a second with curl,
# approve every Scheduled event at once, and exit once the events it saw are over.
#
# Example: imds-replay run --trace live-migration --speed 60 --expect approve -- sh examples/curl_handler.sh
url="http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01"
seen=no
while :; do
  if ! doc=$(curl -sf --noproxy '*' -H 'Metadata: true' "$url"); then
    sleep 1
    continue
  fi
  case "$doc" in
    *'"Events":[]'*) if [ "$seen" = yes ]; then echo "events over"; exit 0; fi ;;
    *) seen=yes ;;
  esac
  for id in $(printf '%s' "$doc" | grep -o '"EventId":"[^"]*","EventStatus":"Scheduled"' | cut -d'"' -f4); do
    body="{\"StartRequests\":[{\"EventId\":\"$id\"}]}"
    curl -sf --noproxy '*' -H 'Metadata: true' -X POST -d "$body" "$url" >/dev/null && echo "approved $id"
  done
  sleep 1
done
