"""The serving wing: engines, the version index and registry, batching, prediction and per-session state.

Nothing here imports ``models.training``: a serving process needs no training code path.
"""
