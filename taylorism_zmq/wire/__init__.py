"""What the roles share: the frames they exchange (:mod:`.protocol`), how user values travel inside them
(:mod:`.codec`), socket settings (:mod:`.sockets`) and who may talk to whom (:mod:`.security`).

The boss, the agents and the clients meet only here: none of them imports another.
"""
