"""The boss: one zmq.Poller loop (:mod:`.daemon`) around a pure state machine (:mod:`.state`)."""
