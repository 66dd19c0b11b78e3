"""Label-free self-improvement (TAO-style): unlabelled prompts, pseudo-labels, policy updates."""
