"""`callbacks`: the command line of callback-scheduler, a client of the public REST API only.

It knows nothing the API does not say: it talks to Envoy with a bearer token, like any client,
and imports nothing of the services.
"""
