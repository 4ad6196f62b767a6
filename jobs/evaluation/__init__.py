"""Evaluation: safety and reasoning metrics, decision probes, reports."""
