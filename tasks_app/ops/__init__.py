"""Operating it: metrics, retention, the dashboard, accounts and tokens, and the scheduler's tasks."""
