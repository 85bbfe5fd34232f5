"""genlab's Optuna sweeper for Hydra (`hydra/sweeper=optuna`): resumable SQLite studies and pruning."""
