"""Optuna study for policy tuning: search space, replay objective, storage, gate, freeze.

Not related to the ``bayesian-optimization`` PyPI package, which also installs a module
named ``bayes_opt``: the two cannot be installed in one environment.
"""
