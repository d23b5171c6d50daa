"""gan-lightning's Hydra plugins: launchers (launchers.py) and a resumable Optuna sweeper (optuna_sweeper.py)."""
