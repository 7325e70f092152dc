"""Prefect flows that chain tuneloop's steps, and the `tuneloop` command line."""
