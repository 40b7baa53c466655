"""From a request or a record_* call to storage and the subscribers.

The request-record builder (``records``) turns the middleware's tuples into events in the
background, the recorder (``recorder``) queues and writes them with an exact ledger, the
fan-out (``sinks``) hands what was stored to subscribers, and the scheduler (``scheduler``)
runs periodic jobs once per period across workers.
"""
