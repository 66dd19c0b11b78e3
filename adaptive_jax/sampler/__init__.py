"""Sampling from the policy on device: KV-cache decode, then best-of-N, beam search and IAS.

Imports only `adaptive_jax.nn` and `adaptive_jax.routing`; scores come in as functions.
"""
