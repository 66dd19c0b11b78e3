"""The papers' headline claims beside our numbers, read from the stages' results.json files.

`results` maps a stage name to its results.json as a dict (None where the stage has none):
'duo' (train.loop.train_and_evaluate), 'oracle' (studies.oracle_study), 'router' (studies.router_study),
'calibrate' (studies.calibration_study), 'ias' (studies.ias_study) and 'label_free'
(studies.label_free_study). JSON turns the oracle's integer budgets
into strings; both are read.
"""

PLAYS = "shakespeare"  # the oracle domain the Duo-LLM claims are read on (held-out plays)
PAPER_L = 12  # the paper's number of layers
MISSING = "no results"


def _budgets(oracle: dict) -> tuple[dict, int]:
  """The plays' {k: budget row} (int keys) and the model's number of layers."""
  domains = oracle["domains"]
  domain = PLAYS if PLAYS in domains else next(iter(domains))
  rows = {int(k): row for k, row in domains[domain]["budgets"].items()}
  return {**domains[domain], "budgets": rows}, int(oracle["num_layers"])


def _stage1(duo: dict) -> str:
  small, big = duo["eval/ppl@all_small"], duo["eval/ppl@all_big"]
  random = next(v for k, v in duo.items() if k.startswith("eval/ppl@random"))
  holds = "yes" if big < random < small else "no"
  return f"{holds} ({big:.2f} < {random:.2f} < {small:.2f})"


def _one_big_layer(oracle: dict) -> str:
  domain, _ = _budgets(oracle)
  if 1 not in domain["budgets"]:
    return "budget 1 not searched"
  one, big = domain["budgets"][1]["oracle_ppl"], domain["all_big_ppl"]
  return f"{'yes' if one < big else 'no'} (ppl {one:.2f} at k=1, all-big {big:.2f})"


def _argmin_budget(oracle: dict) -> str:
  domain, num_layers = _budgets(oracle)
  ppl = {k: row["oracle_ppl"] for k, row in domain["budgets"].items()}
  best = min(ppl, key=ppl.get)
  return f"k = {best} of L = {num_layers} (ppl {ppl[best]:.2f})"


def _router_gap(router: dict) -> str:
  """At the middle budget on the plays: the oracle against the paper router (budget-exact)."""
  budgets = sorted(int(k) for k in router["budgets"])
  k = min(budgets, key=lambda b: abs(b - int(router["num_layers"]) / 2))
  row = router["budgets"][str(k)]
  domain = PLAYS if PLAYS in router["domains"] else next(iter(router["domains"]))
  paper = row["paper"]["eval"][domain]["exact"]["ppl"]
  if "oracles" not in row:
    return f"no oracle rows (router ppl {paper:.2f} at k={k})"
  oracle = row["oracles"][domain]["oracle_ppl"]
  return (f"{'yes' if oracle < paper else 'no'} (k={k}: oracle {oracle:.2f}, "
          f"paper router {paper:.2f})")


# A calibration claim needs a policy that solves some problems: at least one difficulty whose
# mean Monte-Carlo success on the test prefixes reaches this.
MIN_SOLVED = 0.3


def _brier_ratio(calibrate: dict) -> str:
  rates = calibrate.get("target_by_difficulty", {})
  if rates and max(rates.values()) < MIN_SOLVED:
    best = max(rates, key=rates.get)
    return (f"not decided: the policy succeeds at most {rates[best]:.2f} of the time (difficulty "
            f"{best}); calibration needs one that solves some problems (>= {MIN_SOLVED})")
  base = calibrate["methods"]["base"]["brier"]
  calibrated = calibrate["methods"]["calibrated"]["brier"]
  text = f"{calibrated / base:.2f}x ({base:.3f} -> {calibrated:.3f})"
  interval = calibrate.get("brier_ratio_to_base", {}).get("calibrated") or {}
  if interval.get("low") is not None:
    text += f", 90% CI [{interval['low']:.2f}, {interval['high']:.2f}]"
  return text


def _ratio(matched: dict) -> str:
  """A ratio at matched accuracy with its 90% interval; above the fixed curve it is the
  ratio at the curve's best accuracy (an upper bound of the saving's ratio)."""
  lo, hi = matched["interval"]
  text = f"{matched['ratio']:.2f}x [{lo:.2f}, {hi:.2f}]"
  return text + (" (above every fixed N)" if matched["above_curve"] else "")


def _undecided(ias: dict) -> str | None:
  """'not decided: ...' where the regime missed its criteria on the design split."""
  chosen = ias.get("regime", {})
  return None if chosen.get("met", True) else f"not decided: {chosen['reason']}"


def _ias_headline(key: str):
  def read(ias: dict) -> str:
    return _undecided(ias) or _ratio(ias["headline"][key])
  return read


def _ias_control(ias: dict) -> str:
  """The uniform mix, the declared negative control: reported whatever the regime."""
  if "ias_control" not in ias["headline"]:
    return "no control run (ias.control_questions = 0)"
  return _ratio(ias["headline"]["ias_control"])


# A label-free claim needs a start policy whose samples are sometimes right: pass@K (K the
# evaluation's samples) on the validation questions at least this.
MIN_START_PASS_AT_K = 0.1


def _label_free(lf: dict) -> str:
  """The best label-free arm's test pass@1 gain (chosen on validation), the supervised arm's."""
  k = lf["config"]["eval_samples"]
  start, val = lf["start"]["test"], lf["start"]["validation"]
  if val[f"pass@{k}"]["value"] < MIN_START_PASS_AT_K:  # a precondition read on validation
    return (f"not decided: the start policy's validation pass@{k} is "
            f"{val[f'pass@{k}']['value']:.2f} (< {MIN_START_PASS_AT_K}): no correct samples "
            "to learn from")
  h = lf["headline"]
  if "label_free_gain" not in h:
    return "no label-free arm ran"
  g = h["label_free_gain"]
  lo, hi = g["interval"]
  text = (f"{g['value']:+.3f} [{lo:+.3f}, {hi:+.3f}] ({h['best_arm']}; pass@1 "
          f"{start['pass@1']['value']:.3f} at the start)")
  if "supervised_gain" in h:
    text += f"; gold SFT {h['supervised_gain']['value']:+.3f}"
  return text


# (claim, the paper's number, the stage whose results hold ours, how ours is read)
CLAIMS = (
    ("Duo stage 1: ppl all-big < random < all-small", "yes", "duo", _stage1),
    ("Duo oracle, 1 big layer beats all-big (plays)", "yes", "oracle", _one_big_layer),
    ("Duo oracle ppl minimum near k = L/2 (plays)", f"k ~ {PAPER_L // 2} of L = {PAPER_L}",
     "oracle", _argmin_budget),
    ("Duo oracle beats the trained router (plays)", "yes", "router", _router_gap),
    ("Calibrated PRM Brier / base PRM", "0.29x (0.24 -> 0.07)", "calibrate", _brier_ratio),
    ("IAS best-of-N FLOPs / fixed N at matched accuracy (the regime)", "about 0.5x",
     "ias", _ias_headline("ias")),
    ("Budget-aware online allocation FLOPs / fixed N (the regime)", "0.5x (Damani et al.)",
     "ias", _ias_headline("budget")),
    ("IAS best-of-N FLOPs / fixed N, uniform mix (control)", "-", "ias", _ias_control),
    ("Label-free loop: test pass@1 gain over the start policy", "TAO +0.024 (0.827 -> 0.851); "
     "gold SFT -0.016", "label_free", _label_free),
)


def claim_rows(results: dict) -> list[tuple[str, str, str]]:
  """(claim, paper, ours) per claim; ours is MISSING where its stage has no results."""
  return [(claim, paper, read(results[stage]) if results.get(stage) else MISSING)
          for claim, paper, stage, read in CLAIMS]


def claims_table(results: dict) -> str:
  """The claim rows as a fixed-width text table with a header."""
  rows = [("claim", "paper", "ours")] + claim_rows(results)
  widths = [max(len(row[i]) for row in rows) for i in range(2)]
  lines = [f"{claim:<{widths[0]}}  {paper:<{widths[1]}}  {ours}" for claim, paper, ours in rows]
  lines.insert(1, "-" * max(map(len, lines)))
  return "\n".join(lines)
