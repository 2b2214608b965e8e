"""`taskhub`: a command line client for the taskhub REST API (/api/v1).

It talks HTTP only and imports nothing from the server, so it works against any taskhub at
TASKHUB_URL (or --url). Modules: main (the typer app), client (HTTP and errors), render (tables),
watch (following a task to its end), and one module per command group.
"""
