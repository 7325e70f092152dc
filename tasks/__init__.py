"""tuneloop's steps, one folder per concern: config and core at the bottom (they import no step code),
then data (load, validate, split), model (resolve, select, baseline, finetune, evaluate, predict),
tracking (MLflow), registry (versions, aliases, champion/challenger) and sweep (Optuna rounds)."""
