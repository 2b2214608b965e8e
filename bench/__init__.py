"""`make bench` (`python -m bench`): throughput and latency of taskhub on PostgreSQL, in one table.

See docs/benchmarks.md for what is measured and how. Nothing here is imported by the app.
"""
