"""Task processes and the launchers that fork them: what runs in the zygote's forks on an agent, and in the
client's own forks with the embedded default (:mod:`..client.forklaunch`).

Neither a role nor the wire: the agent and the client both use it, and it imports only the wire.
"""
