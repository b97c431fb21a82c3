"""An interactive Scheduled Events handler, shaped like the sample in Microsoft's documentation.

It talks to the real address, http://169.254.169.254, and asks on stdin what to do: 1 waits
for the next document (polling once a second until DocumentIncarnation changes, tracked as the
string "-1" at first and compared with ==, as the sample does) and handles its events; 2 quits.
Started events are logged, User events and Freezes of 0 to 8 seconds approved at once, the
rest logged. Standard library only. Test it unmodified:

Example: printf '1\\n1\\n1\\n2\\n' | imds-replay run --trace live-migration --speed 60
    --expect approve -- python examples/menu_handler.py
"""

import json
import time
import urllib.request

ENDPOINT = "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01"
HEADERS = {"Metadata": "true"}


def fetch_document():
    request = urllib.request.Request(ENDPOINT, headers=HEADERS)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def start_event(event_id):
    body = json.dumps({"StartRequests": [{"EventId": event_id}]}).encode()
    request = urllib.request.Request(ENDPOINT, data=body, headers=HEADERS, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def wait_for_change(last_incarnation):
    """Poll once a second until the incarnation differs from the last one handled."""
    while True:
        document = fetch_document()
        if document["DocumentIncarnation"] != last_incarnation:
            return document
        time.sleep(1)


def handle(document):
    for event in document["Events"]:
        event_id, kind = event["EventId"], event["EventType"]
        if event["EventStatus"] == "Started":
            print(f"{kind} {event_id} has started", flush=True)
        elif event["EventSource"] == "User":
            print(f"approving user event {event_id}: {start_event(event_id)}", flush=True)
        elif kind == "Freeze" and 0 <= int(event["DurationInSeconds"]) < 9:
            print(f"approving short freeze {event_id}: {start_event(event_id)}", flush=True)
        else:
            print(f"{kind} {event_id} needs a person: {event['Description']}", flush=True)
    print(f"handled document {document['DocumentIncarnation']}", flush=True)


def main():
    last_incarnation = "-1"
    while True:
        choice = input("1: wait for the next events document, 2: quit\n").strip()
        if choice == "1":
            document = wait_for_change(last_incarnation)
            handle(document)
            last_incarnation = document["DocumentIncarnation"]
        elif choice == "2":
            return


if __name__ == "__main__":
    main()
