"""Cloud-side runtimes: the Spark streaming job and the dashboard."""
