"""Framework-free library: data, VQ-VAE, prior, atlas analyses and the morphology judge.

Nothing in this package imports prefect, mlflow or optuna (see tests/test_layout.py).
"""
