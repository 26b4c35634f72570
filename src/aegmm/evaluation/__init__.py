"""Evaluation of a fitted clusterer: metrics for the report."""
