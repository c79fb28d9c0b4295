"""Helpers that test modules and benchmarks import.

Importing any module here has no side effect: no environment variable is changed and no
process is started (the scrubbing of the environment and the session's servers live in the
conftest.py files, which only pytest loads). Modules are named for what they help with:
ports, stacks, simulated_phones, waiting, wire_times, queues (REST), calls and database (rows
read as another client), events (NATS), postgres (the integration tier's server), certs,
launcher, api_fuzz, manifests (rendered Kubernetes objects).
"""
