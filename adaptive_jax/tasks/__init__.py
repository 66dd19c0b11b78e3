"""Reasoning tasks with exact answer checkers: the embedded arithmetic family and adapters.

Imports nothing else of ours.
"""
