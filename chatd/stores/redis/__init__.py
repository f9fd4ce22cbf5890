"""Redis, for every instance of one deployment: the shared client
(:mod:`.client`: one pool, one breaker, worker threads) and the stores on it
(:mod:`.stores`: answer cache and sessions). Flights and resumable requests
across instances use the same client from :mod:`chatd.pipeline`, since what
they share is the pipeline's own state.
"""
