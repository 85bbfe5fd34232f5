"""genlab's Optuna sweeper for Hydra (`hydra/sweeper=optuna`): studies shared by processes and machines, pruning."""
