"""Duo-LLM stage 3: learned routers (paper's budget-regularized and oracle-imitating) on a
frozen Duo model; the router itself is `adaptive_jax.nn.router`."""
