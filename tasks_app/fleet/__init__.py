"""Clusters, nodes and their records: registration, heartbeats, the pull API, dead nodes."""
