"""A Scheduled Events handler that behaves like the sample client in Microsoft's documentation.

It polls once a second, acts only when DocumentIncarnation changes (tracked as a string that
starts at "-1" and compared with ==), logs Started events, approves User events at once and
Freeze events with 0 <= DurationInSeconds < 9, and logs the rest. Point it at imds-replay with
`--base http://127.0.0.1:8080` (the real service is http://169.254.169.254).

Example: python examples/sample_handler.py --base http://127.0.0.1:8080 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request

PATH = "/metadata/scheduledevents?api-version=2020-07-01"


def get_document(base: str) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(base + PATH, headers={"Metadata": "true"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def approve(base: str, event_id: str) -> int:
    body = json.dumps({"StartRequests": [{"EventId": event_id}]}).encode()
    request = urllib.request.Request(base + PATH, data=body, headers={"Metadata": "true"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return int(resp.status)


def handle(base: str, document: dict) -> None:  # type: ignore[type-arg]
    for event in document["Events"]:
        eid, status = event["EventId"], event["EventStatus"]
        print(
            f"event {eid} {event['EventType']} {status} NotBefore={event['NotBefore']!r}",
            flush=True,
        )
        if status == "Started":
            print(f"started {eid}", flush=True)
        elif event.get("EventSource") == "User":
            print(f"approve {eid} (User) -> {approve(base, eid)}", flush=True)
        elif event["EventType"] == "Freeze" and 0 <= event.get("DurationInSeconds", -1) < 9:
            print(f"approve {eid} (short Freeze) -> {approve(base, eid)}", flush=True)
        else:
            print(f"skip {eid}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://169.254.169.254")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    args = parser.parse_args()
    last_incarnation = "-1"
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        document = get_document(args.base)
        incarnation = str(document["DocumentIncarnation"])
        if incarnation != last_incarnation:
            print(f"incarnation {incarnation} {json.dumps(document)}", flush=True)
            handle(args.base, document)
            last_incarnation = incarnation
        time.sleep(1)


if __name__ == "__main__":
    main()
