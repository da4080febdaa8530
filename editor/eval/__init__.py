"""Evaluation: quality metrics (metrics), the held-out evaluation (evaluate) and the speed benchmark (bench)."""
