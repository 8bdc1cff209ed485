"""Experiments: orchestration of the maths, data, models and methods into runs, figures and tables."""
