"""Discrete-event model of one continuously-batching, paged-KV engine replica.

Step-time models, trace loaders, workload generators, metrics and reports. Calls only
:mod:`scorer` for decisions, so it exercises exactly the code that runs in the engine.
"""
