"""The HTTP gateway (extra ``http``): a separate process that is one more client of a named pool.

Started as ``python -m interrupt_pool._http --name NAME [--bind 127.0.0.1:8700] [--token-file PATH]
[--cors ORIGIN ...]`` (``pool serve --http``, still to be wired, is to start exactly that as a child
process). It speaks the
supervisor's protocol through :meth:`interrupt_pool.Pool.connect`, so its crash never stops the
pool, and a pool that is gone makes every route but ``/healthz`` answer 503 until it is back.

Modules, each owning one thing:

- ``_auth``: the bearer token (where it comes from, the token file, the constant-time check)
  and the bind-address rule (a non-loopback address needs a token someone chose).
- ``_link``: the gateway's one connection to the supervisor: (re)connecting on demand, the
  event thread, the ring buffer of recent events behind ``GET /v1/events``, waiters for
  executions' ends, and what ``/metrics`` counts from the event stream.
- ``_metrics``: the Prometheus text exposition, written by hand.
- ``_schemas``: the pydantic models of request and response bodies (what /openapi.json shows).
- ``app``: the FastAPI application: routes, auth, body-size limit, error handlers, CORS.
- ``__main__``: arguments, token, the listening socket, uvicorn.

Importing this package imports nothing from FastAPI: only ``app`` and ``__main__`` do.
"""

__all__ = ()
