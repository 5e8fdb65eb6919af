"""Ray job queue (see issue: Cluster)."""
