"""The server half of each task-type family: what needs the database. For each type, the create-time
checks (an existing cluster, a member node, a free volume name; they may add what the nodes need but
cannot look up) and the completion hook that writes the record its work created, from its node's
report (Kadalu: "creates a record in respective table").

Each module here mirrors the family of the same name in workers/families/, which holds the node half:
payload schema, participants, ordering key, and the run and compensate steps. The registry is
tasks_app/families/registry.py.
"""
