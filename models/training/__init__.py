"""The training wing: fitting, background jobs, comparisons and their report, datasets, uploads.

It writes versions through ``models.serving.model_index``; the serving wing never imports this package.
"""
