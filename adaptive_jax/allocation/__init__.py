"""Budget-aware allocation of samples across questions."""
