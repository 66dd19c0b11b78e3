"""The reasoning policy: a dense transformer trained on a task, and its accuracy by difficulty."""
