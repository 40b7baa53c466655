"""Analytics computed from rollups (and raw events for detail lists), for the JSON API."""
