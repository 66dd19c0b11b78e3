"""A tiny Llama GGUF with a byte-level BPE vocabulary and SmolLM2's special tokens, written
here: the pretrained-policy path runs on it in seconds, in place of the 98 MB SmolLM2 file."""

import gguf as gguf_lib
import numpy as np

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2, as in SmolLM2


def byte_alphabet() -> list[str]:
  """GPT-2's printable spelling of the 256 bytes (byte b -> chr), " " -> "Ġ", "\\n" -> "Ċ"."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  extra = iter(range(256, 512))
  return [chr(b if b in printable else next(extra)) for b in range(256)]


def write(path, *, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64, num_layers=2, seed=0,
          rope_freq_base=10_000.0, write_head_count_kv=True, rope_scaling=None):
  """Writes a random float32 Llama with tied embeddings; its vocabulary is the three special
  tokens, the 256 bytes and two merges ("Ġ=" and "Ġ+").

  `rope_freq_base=None` or `write_head_count_kv=False` leave those keys out; `rope_scaling`
  ({"type": str, "factor": float}, either or both) writes the rope-scaling keys.
  """
  tokens = [*SPECIAL, *byte_alphabet(), "Ġ=", "Ġ+"]
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.normal(0, 0.2, shape).astype(np.float32)
  head_dim = d_model // num_heads
  writer = gguf_lib.GGUFWriter(str(path), arch="llama")
  writer.add_block_count(num_layers)
  writer.add_context_length(256)
  writer.add_embedding_length(d_model)
  writer.add_feed_forward_length(d_ff)
  writer.add_head_count(num_heads)
  if write_head_count_kv:
    writer.add_head_count_kv(num_kv_heads)
  if rope_freq_base is not None:
    writer.add_rope_freq_base(rope_freq_base)
  if rope_scaling and "type" in rope_scaling:
    writer.add_rope_scaling_type(gguf_lib.RopeScalingType(rope_scaling["type"]))
  if rope_scaling and "factor" in rope_scaling:
    writer.add_rope_scaling_factor(rope_scaling["factor"])
  writer.add_layer_norm_rms_eps(1e-5)
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre("smollm")
  writer.add_token_list(tokens)
  writer.add_token_types([3] * len(SPECIAL) + [1] * (len(tokens) - len(SPECIAL)))
  writer.add_token_merges(["Ġ =", "Ġ +"])
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
  writer.add_tensor("token_embd.weight", normal(len(tokens), d_model))
  writer.add_tensor("output_norm.weight", np.ones(d_model, np.float32))
  for i in range(num_layers):
    for name, shape in (("attn_q", (num_heads * head_dim, d_model)),
                        ("attn_k", (num_kv_heads * head_dim, d_model)),
                        ("attn_v", (num_kv_heads * head_dim, d_model)),
                        ("attn_output", (d_model, num_heads * head_dim)),
                        ("ffn_gate", (d_ff, d_model)), ("ffn_up", (d_ff, d_model)),
                        ("ffn_down", (d_model, d_ff))):
      writer.add_tensor(f"blk.{i}.{name}.weight", normal(*shape))
    writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d_model, np.float32))
    writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d_model, np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path
