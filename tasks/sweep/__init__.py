"""Hyperparameter sweeps: the state every round shares (bottom), the Optuna search, one trial, the
rounds' budget and escalation, requeueing, the sweep's Prefect tasks and its report."""
