"""kasp's pure core: the job state machine, its events, the projection and policies.

Nothing here does I/O, awaits a store or knows about HTTP; `service/` adapts it.
"""
