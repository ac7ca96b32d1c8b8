"""Example user functions for kfbatch's extension points (``batch_map``, transforms)."""
