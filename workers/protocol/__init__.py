"""The protocol between the server and its nodes, and the only part of `workers` the server imports.

ORM-free: status names and rules (status), the execute message and the status report (messages),
every Redis key (keys) and the client (connection), task and queue names and the one router (queues),
retry backoff (backoff), handler errors and payload checks (errors, payload), what a handler gets
(context), and the registry of task-type specs (specs).
"""
