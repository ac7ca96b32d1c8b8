"""Metrics and pictures: validation and test metrics per task, and the charts steps write."""
