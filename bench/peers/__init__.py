"""The peer benchmark (``bench/run.py --peers``): lstm-serve beside the servers a user would pick instead.

``contenders.py`` says what runs (how each server starts, the body its protocol takes), ``servers/`` holds the
peers' own code (each runs in its own virtual environment, see ``venvs.py``), ``runner.py`` measures them and
``report.py`` writes the tables.
"""
