"""The MLflow model registry: versions and aliases, the champion rule, fetching a registered model."""
