"""Sweeps: a grid of fine-tuning runs as one resumable job, and the views that compare them."""
