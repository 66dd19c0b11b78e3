"""SmolLM2-135M-Instruct on real text: held-out perplexity, bits per byte, greedy answers.

The text is the from-scratch models' held-out text: the first documents of each domain's
held-out split (Shakespeare's held-out plays, Python's standard library), read in the order
`data.make_eval_batches` packs them, as many as hold `num_tokens` SmolLM2 tokens. SmolLM2 is
scored in windows of each of `windows`; a finished Duo stage-1 run, when given, on the same
documents under all-big routes in windows of its own context. Bits per byte is the number to
compare across the two tokenizers (see text_eval).
"""

import dataclasses
import functools
import os
import time

import jax
import ml_collections
from absl import logging

from adaptive_jax import atomic_file, routing
from adaptive_jax import data as data_lib
from adaptive_jax.data import pipeline
from adaptive_jax.data.tokenizer import MIN_VOCAB_SIZE
from adaptive_jax.models import smollm2, text_eval
from adaptive_jax.nn import quantize
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.sampler import decode
from adaptive_jax.train.state import count_params
from adaptive_jax.train.trained import load_trained
from adaptive_jax.typed_config import check_choice, check_int, from_mapping


@dataclasses.dataclass(frozen=True)
class PretrainedEvalConfig:
  """See configs/pretrained_eval.py for the meaning of each field."""
  data_dir: str = "~/.cache/adaptive_jax/data"
  domains: tuple[str, ...] = ("shakespeare", "python_stdlib")
  num_tokens: int = 4096
  windows: tuple[int, ...] = (2048, 128)
  weights: tuple[str, ...] = ("float32",)
  tokens_per_call: int = 2048
  questions: tuple[str, ...] = ("What is the capital of France?",)
  max_new_tokens: int = 48
  stage1_config: str = "configs/duo_small.py"

  def __post_init__(self):
    for name in ("num_tokens", "tokens_per_call", "max_new_tokens"):
      check_int("eval", name, getattr(self, name))
    for w in self.windows:
      check_int("eval", "windows entry", w)
    for w in self.weights:
      check_choice("eval", "weights entry", w, quantize.WEIGHT_FORMATS)
    if not self.weights or self.weights[0] != "float32":
      raise ValueError(f"eval.weights must start with 'float32' (the reference the others are "
                       f"read against), got {tuple(self.weights)!r}")
    for domain in self.domains:
      if domain not in pipeline.HELD_OUT_SPLITS:
        raise ValueError(f"eval.domains entries must be in {tuple(pipeline.HELD_OUT_SPLITS)}, "
                         f"got {domain!r}")
    object.__setattr__(self, "domains", tuple(self.domains))
    object.__setattr__(self, "windows", tuple(self.windows))
    object.__setattr__(self, "weights", tuple(self.weights))
    object.__setattr__(self, "questions", tuple(self.questions))


def held_out_documents(domain: str, data_dir: str, tokenizer, num_tokens: int) -> list[str]:
  """The first held-out documents of `domain`, until they hold >= num_tokens of `tokenizer`."""
  # Reading a split needs only the name and the folder; the other fields satisfy DataConfig.
  cfg = data_lib.DataConfig(name=domain, data_dir=data_dir, vocab_size=MIN_VOCAB_SIZE,
                            seq_len=1, batch_size=1, seed=0)
  source = data_lib.prepare_dataset(cfg).as_data_source(split=pipeline.HELD_OUT_SPLITS[domain])
  documents, tokens = [], 0
  for i in range(len(source)):
    if tokens >= num_tokens:
      break
    text = source[i][cfg.text_key]
    documents.append(text.decode("utf-8") if isinstance(text, bytes) else text)
    tokens += len(tokenizer.encode(documents[-1]))
  if tokens < num_tokens:
    raise ValueError(f"the held-out split of {domain!r} holds only {tokens} tokens, fewer than "
                     f"eval.num_tokens={num_tokens}")
  return documents


@functools.partial(jax.jit, static_argnames=("cfg",))
def dense_logprobs(params, inputs_BxT, targets_BxT, *, cfg):
  """log p(target) [B, T] of a dense model."""
  logits_BxTxV = Transformer(cfg).apply({"params": params}, inputs_BxT)
  return text_eval.token_logprobs(logits_BxTxV, targets_BxT)


@functools.partial(jax.jit, static_argnames=("cfg",))
def all_big_logprobs(params, inputs_BxT, targets_BxT, *, cfg):
  """log p(target) [B, T] of a Duo model with every token BIG at every layer."""
  route_BxTxL = routing.constant_routes((*inputs_BxT.shape, cfg.num_layers), routing.Route.BIG)
  logits_BxTxV = Transformer(cfg).apply({"params": params}, inputs_BxT, route_BxTxL=route_BxTxL)
  return text_eval.token_logprobs(logits_BxTxV, targets_BxT)


def greedy_answers(model: smollm2.Pretrained, questions, max_new_tokens: int) -> list[dict]:
  """Each question as one user turn of the chat template, answered greedily in one batch."""
  prompts = [model.tokenizer.encode(model.chat_prompt([{"role": "user", "content": q}]))
             for q in questions]
  prompt_BxP, prompt_len_B = decode.left_pad(prompts)
  dec = decode.DecodeConfig(max_new_tokens, decode.SamplingPolicy(temperature=0.0),
                            stop_tokens=(model.end_of_turn_id,))
  out = decode.sample(model.params, prompt_BxP, prompt_len_B,
                      jax.random.split(jax.random.key(0), len(prompts)), cfg=model.cfg, dec=dec)
  answers = []
  for b, question in enumerate(questions):
    tokens = out.tokens_BxM[b, :int(out.lengths_B[b])].tolist()
    answers.append({"question": question, "prompt_tokens": len(prompts[b]),
                    "answer": model.tokenizer.decode(tokens, skip_special=True).strip(),
                    "ended_turn": bool(tokens and tokens[-1] == model.end_of_turn_id)})
  return answers


def _score(name, documents, tokenizer, separator_id, logprob_fn, window, cfg) -> dict:
  start = time.perf_counter()
  score = text_eval.score_documents(documents, tokenizer, separator_id, logprob_fn, window,
                                    max(1, cfg.tokens_per_call // window), name=name)
  seconds = time.perf_counter() - start
  logging.info("%s (window %d): %d tokens, ppl %.3f, %.4f bits/byte, %.1f s", name, window,
               score.num_tokens, score.perplexity, score.bits_per_byte, seconds)
  return {"window": window, **score.as_dict(), "seconds": seconds}


def run_study(config: ml_collections.ConfigDict, workdir: str,
              duo_workdir: str | None = None) -> dict:
  """Scores every domain, answers the questions; writes and returns results.json's dict."""
  cfg = from_mapping(PretrainedEvalConfig, config.eval, "eval")
  start = time.perf_counter()
  model = smollm2.load()
  results = {"model": smollm2.FILENAME, "num_params": count_params(model.params),
             "config": dataclasses.asdict(cfg), "domains": {}}
  duo = None
  if duo_workdir:
    train_command = (f"python -m experiments.train_duo --config={cfg.stage1_config} "
                     f"--workdir={duo_workdir}")
    stage1_config, duo_cfg, duo_params = load_trained(duo_workdir, train_command=train_command)
    duo_tokenizer = data_lib.prepare(data_lib.DataConfig(**stage1_config.data))
    duo = (duo_cfg, duo_params, duo_tokenizer)
    results["duo"] = {"workdir": duo_workdir, "num_params": count_params(duo_params),
                      "window": duo_cfg.max_len, "routes": "all big"}
  smollm2_logprobs = {}
  for weights in cfg.weights:
    w_cfg, w_params = quantize.convert_weights(model.cfg, model.params, weights, "eval.weights")
    smollm2_logprobs[weights] = functools.partial(dense_logprobs, w_params, cfg=w_cfg)
  separator_id = model.tokenizer.token_id("<|endoftext|>")  # SmolLM2's document separator
  for domain in cfg.domains:
    documents = held_out_documents(domain, cfg.data_dir, model.tokenizer, cfg.num_tokens)
    row = {"num_documents": len(documents),
           "num_bytes": sum(len(d.encode("utf-8")) for d in documents), "scores": {}}
    for weights, logprob_fn in smollm2_logprobs.items():
      name = "smollm2" if weights == "float32" else f"smollm2 {weights}"
      for window in cfg.windows:
        row["scores"][f"{name}@{window}"] = _score(name, documents, model.tokenizer,
                                                   separator_id, logprob_fn, window, cfg)
    if duo is not None:
      duo_cfg, duo_params, duo_tokenizer = duo
      row["scores"][f"duo_all_big@{duo_cfg.max_len}"] = _score(
          "duo", documents, duo_tokenizer, duo_tokenizer.eos_id,  # its packing's separator
          functools.partial(all_big_logprobs, duo_params, cfg=duo_cfg), duo_cfg.max_len, cfg)
    results["domains"][domain] = row
  tick = time.perf_counter()
  results["answers"] = greedy_answers(model, cfg.questions, cfg.max_new_tokens)
  results["answer_seconds"] = time.perf_counter() - tick
  results["seconds"] = time.perf_counter() - start
  os.makedirs(workdir, exist_ok=True)
  atomic_file.write_json(os.path.join(workdir, "results.json"), results)
  return results


def results_table(results: dict) -> str:
  """Perplexity and bits per byte per domain and model, then the greedy answers."""
  lines = [f"{results['model']} ({results['num_params'] / 1e6:.1f}M parameters) on held-out "
           f"text; bits/byte compares across tokenizers",
           f"{'domain':<14} {'model@window':<22} {'docs':>5} {'bytes':>7} {'tokens':>7} "
           f"{'bytes/tok':>9} {'ppl':>8} {'bits/byte':>9}"]
  for domain, row in results["domains"].items():
    for name, s in row["scores"].items():
      lines.append(f"{domain:<14} {name:<22} {row['num_documents']:>5} {s['num_bytes']:>7} "
                   f"{s['num_tokens']:>7} {s['num_bytes'] / s['num_tokens']:>9.2f} "
                   f"{s['perplexity']:>8.3f} {s['bits_per_byte']:>9.4f}")
  if "duo" in results:
    duo = results["duo"]
    lines.append(f"duo: {duo['workdir']} ({duo['num_params'] / 1e6:.2f}M parameters), "
                 f"{duo['routes']}")
  lines.append("greedy answers (chat template):")
  for a in results["answers"]:
    end = "" if a["ended_turn"] else " [cut at max_new_tokens]"
    lines.append(f"  Q: {a['question']}\n  A: {a['answer']!r}{end}")
  lines.append(f"total {results['seconds']:.0f} s")
  return "\n".join(lines)
