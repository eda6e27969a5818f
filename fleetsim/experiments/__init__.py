"""Fault-injection experiments: scenario campaigns, ground-truth scoring, reports."""
