"""Scaling curves of fixed-N methods and compute ratios at matched accuracy."""
