"""MLflow tracking: the store and its client, what a training and a sweep log, the leaderboard."""
