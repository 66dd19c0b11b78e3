"""adaptive_jax: adaptive computation in language models (Duo-LLM, calibrated PRMs and IAS).

Arrays are named by their shapes (`x_BxTxD`). The letters, library-wide:
  B batch     T tokens    D model width   F FFN width    L layers    R route options
  V vocabulary   H head width   P patterns (oracle)   C score channels (sampler)

Letters that mean one thing per module, each stated in that module's docstring:
  N  query heads (nn/attention.py, sampler/decode.py); samples per question (sampler/, prm/ias*)
  K  key/value heads (nn/attention.py, sampler/decode.py); budgets (oracle/); beams or probe
     samples (sampler/beam.py, sampler/adaptive.py, allocation/ias.py)
  Q  quantile levels (prm/fit.py, prm/model.py); questions (sampler/, studies/ias_study.py)
  S  cache slots (sampler/decode.py, nn/attention.py); solution steps (prm/)
  M  new tokens (sampler/decode.py); oracle rows, budgets x batch (oracle/sequential.py)
  P  prompt length (sampler/decode.py); tree nodes (oracle/sequential.py)
  G  query heads per key/value head (nn/attention.py)
"""
