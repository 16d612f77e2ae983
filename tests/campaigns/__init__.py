"""Reliability campaigns for shmkit (issue 13): long-running, seeded, repeatable.

Each campaign is a command (``python -m tests.campaigns NAME --seconds S --seed N``, run
from the repository root) that prints a summary table and writes JSON; ``make test``
runs a short version of each (tests/test_campaigns.py), and docs/reliability.md lists
them with the figures of their long runs.
"""
