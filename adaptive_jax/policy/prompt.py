"""How the policy reads a prompt: EOS, then the text's ids.

EOS first because in training every document follows the previous one's EOS (policy/data.py
packs whole problems that way), so at sampling, scoring and fine-tuning the prompt must open
the same way: with the byte tokenizer (EOS = 2, byte b -> b + 3), "1+1" -> [2, 52, 46, 52].
"""


def encode_prompt(tokenizer, text: str) -> list[int]:
  """`[tokenizer.eos_id] + tokenizer.encode(text)`."""
  return [tokenizer.eos_id] + tokenizer.encode(text)
