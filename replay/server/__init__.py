"""The aiohttp server: IMDS routes, the control API, push streams and the page.

- `keys`: the app's typed state (web.AppKey); imports nothing else of the server.
- `middlewares`: the guard (host, origin, JSON bodies, token) and the control error shape.
- `imds`: the IMDS routes, answered exactly as IMDS does; `failures`: warm-up and fault
  playbooks on the IMDS path (a session's, a fleet VM's).
- `control`: the control API under /replay/; `openapi`: its description; `verbs`: what the
  session's and the fleet's control routes share (bodies, the anchor's verbs as routes).
- `fanout`, `streams`: push to WebSocket and Server-Sent Events subscribers.
- `page`: the control page and its static/ ES modules (no build step).
- `fleet`, `fleet_control`: a fleet's IMDS routes (by client address, /vm/{name}/), its
  push streams (each VM's, the whole fleet's) and page, and its control API under
  /replay/fleet.
- `app`: make_app, the one route list, and what is made and closed with the app.
- `linklocal`: serving at 169.254.169.254 itself (`serve --link-local`): the probe for a real
  IMDS, and the address on the loopback interface (rtnetlink, standard library only).
- `vm`: the IMDS one VM sees (`imds-replay run`): one session's routes on a socket of its
  own, each request and answer observed for the run's report.

May import: everything below it (replay.playback, replay.store, replay.core, errors, clock).
"""
