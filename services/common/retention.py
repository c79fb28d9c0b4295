"""How long rows kept only for a while live (shared by the api that writes them and the
dispatchers that delete them)."""

from __future__ import annotations

from datetime import timedelta

# An Idempotency-Key is remembered this long. A retry comes within seconds or minutes; a day
# also covers a client retrying the next morning, and bounds the table to a day of keyed POSTs.
IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)
