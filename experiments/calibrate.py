r"""Calibrated PRM: MC labels, base PRM, calibration methods; Brier/ECE before and after.

  python -m experiments.calibrate --config=configs/calibrate_small.py --workdir=workdir/calibrate_small
  python -m experiments.calibrate --config=configs/calibrate_smollm2.py \
      --workdir=workdir/calibrate_smollm2   # SmolLM2-135M as policy and PRM backbone
"""

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.studies.calibration_study import run_calibration_study
from adaptive_jax.train import distributed

_WORKDIR = flags.DEFINE_string("workdir", None, "MC shards, results.json, predictions.npz.",
                               required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Calibration config file.",
                                          lock_config=True)


def main(argv):
  del argv
  distributed.initialize()  # before anything touches a device
  results = run_calibration_study(_CONFIG.value, _WORKDIR.value)
  fine_tune = results["policy"]["fine_tune"]
  if fine_tune:
    print(f"policy: {results['policy']['source']}, fine-tuned ({len(fine_tune['losses'])} steps, "
          f"final loss {fine_tune['losses'][-1]:.4f}); greedy accuracy by difficulty on "
          f"{fine_tune['eval_problems_per_difficulty']} held-out problems each: "
          + ", ".join(f"{d}: {a:.2f}" for d, a in fine_tune["accuracy"].items()))
  selection = results["selection"]
  print("calibration settings, validation Brier of the calibrated mean:")
  for candidate in selection["candidates"]:
    print(f"  {candidate}")
  print(f"chosen on validation: {selection['chosen']}; estimate: {selection['estimate']}")
  print(f"{'method':<18}{'val Brier':>10}{'Brier':>8}{'ECE':>8}  test Brier / base, 90% CI "
        "over test questions")
  for name, scores in results["methods"].items():
    ratio = results["brier_ratio_to_base"].get(name)
    interval = f"{ratio['ratio']:>7.3f}" if ratio else ""
    if ratio and ratio["low"] is not None:
      interval += f" [{ratio['low']:.3f}, {ratio['high']:.3f}]"
    print(f"{name:<18}{results['validation'][name]['brier']:>10.4f}{scores['brier']:>8.4f}"
          f"{scores['ece']:>8.4f}  {interval}")
  print("reference predictors (not PRMs): Brier, ratio to base")
  for name, ref in results["reference"].items():
    print(f"  {name:<30}{ref['brier']:>8.4f}{ref['ratio_to_base']:>8.3f}")
  print("gold vs wrong prefixes, AUC within each difficulty (steps >= 1):")
  for name, auc in results["gold_prefix_auc"].items():
    cells = ", ".join(f"{d}: {'-' if v['auc'] is None else format(v['auc'], '.3f')} "
                      f"({v['gold']}/{v['wrong']})" for d, v in auc["by_difficulty"].items())
    mean = "-" if auc["mean"] is None else f"{auc['mean']:.3f}"
    print(f"  {name:<12} mean {mean}; by difficulty (gold/wrong prefixes): {cells}")
  print("coverage:", {k: round(v, 3) for k, v in results["coverage"].items()})


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
