"""Pretrained checkpoints in our transformer: a Llama GGUF loader and tokenizer, SmolLM2.

Needs the [pretrained] extra (gguf, tokenizers, jinja2).
"""
