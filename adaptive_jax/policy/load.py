"""The policy a study samples from, loaded from its source: a train_policy run or SmolLM2."""

import ml_collections

from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from adaptive_jax.train.trained import load_trained
from adaptive_jax.typed_config import check_choice, from_mapping

POLICY_SOURCES = ("trained", "smollm2")


def load_policy(config: ml_collections.ConfigDict, workdir: str):
  """(params, model config, tokenizer, fine-tune results or None) of the policy that writes the
  MC labels: `config.policy_source` "trained" (default), a finished train_policy run in
  `config.policy_workdir`, with the byte tokenizer; "smollm2", SmolLM2-135M-Instruct with LoRA
  adapters fine-tuned on gold solutions (`config.pretrained_policy`, `config.fine_tune`;
  policy/pretrained_policy.py), kept in `workdir`."""
  source = config.get("policy_source", "trained")
  check_choice("config", "policy_source", source, POLICY_SOURCES)
  if source == "smollm2":
    # Imported here: the pretrained extra (gguf, tokenizers, jinja2) is only needed on this path.
    from adaptive_jax.policy import lora_fine_tune, pretrained_policy
    return pretrained_policy.fine_tuned_policy(
        from_mapping(pretrained_policy.PretrainedPolicyConfig, config.pretrained_policy,
                     "pretrained_policy"),
        from_mapping(lora_fine_tune.FineTuneConfig, config.fine_tune, "fine_tune"), workdir)
  train_command = (f"python -m experiments.train_policy --config={config.policy_config} "
                   f"--workdir={config.policy_workdir}")
  _, cfg, params = load_trained(config.policy_workdir, train_command=train_command)
  return params, cfg, ByteTokenizer(), None
