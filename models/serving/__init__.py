"""The serving wing: engines, the version store, batching, prediction and per-session state.

Nothing here imports ``models.training``: a serving process needs no training code path.
"""
