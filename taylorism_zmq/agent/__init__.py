"""The agent: one per host, between the boss and the task processes (:mod:`.daemon`)."""
