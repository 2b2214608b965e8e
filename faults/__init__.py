"""The fault suite (`make faults`, `make soak MINUTES=N`, `python -m faults --quick`).

It starts a production-shaped stack of its own on 127.0.0.1 (a private Redis and PostgreSQL, gunicorn, two
writers, the scheduler, three nodes), breaks it on purpose (kills, outages, poison, reordered updates), lets
it settle, and then reads the database and the nodes' ledgers to count what was lost, run twice, moved
backwards or left unfinished. docs/reliability.md has how to run it and a full run's table.

Modules: procs (children, always stopped), infra (Redis, PostgreSQL), stack (taskhub's processes), client
(HTTP load and what the API answered), audit (the counts), experiments, handlers (the suite's task types),
report (the table).
"""

# Where fault_work (faults/handlers.py) notes each finished run, in the node's data dir; the audit reads it.
# Here, not in faults.handlers: importing that module registers its task types in the importing process.
EXECUTIONS_LOG = "executions.log"
