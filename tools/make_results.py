"""Write docs/results.md from the committed JSON under docs/bench/, and nothing else.

Every number on the results page comes from one of these files, each written by the
command it names:

    quickstart.json            tools/measure_run.py ... fuss-ray run configs/quickstart.yaml
    quickstart-driver-loop.json  the same, with --set federation.server.actor=false
    study-benchmark.json       fuss-ray study configs/studies/benchmark.yaml (its study.json)
    benchmark-calibration.json tools/calibrate_benchmark.py
    many-clients.json          tools/measure_run.py ... fuss-ray run configs/many_clients.yaml
    protocol-options.json      tools/protocol_options.py

    python tools/make_results.py          # rewrites docs/results.md (and the study's figures)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BENCH = DOCS / "bench"
sys.path.insert(0, str(ROOT))


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((BENCH / name).read_text())
    return data


def f1(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def quickstart() -> list[str]:
    q = load("quickstart.json")
    s = q["summary"]
    final, val, ref = s["final"], s["val"], s["reference"]
    last = s["rounds"][-1]
    return [
        "## Quickstart (`make quickstart`)",
        "",
        f"`{q['command']}`: 10 clients, Dirichlet alpha 0.1 over each image's dominant class, "
        f"`{s['strategy']}`, {len(s['rounds'])} rounds x 10 local steps, synthetic scenes of 5 "
        "texture classes (180 training, 20 validation carved out of them, 40 test), "
        "EfficientNet-Lite0 ImageNet features (offline). From `docs/bench/quickstart.json`:",
        "",
        "| | test mIoU | test pixel acc. | validation mIoU |",
        "|---|---|---|---|",
        f"| {s['strategy']} after {last['round']} rounds (seed {s['seed']}) | "
        f"{f1(final['miou'])} | {f1(final['pixel_acc'])} | {f1(val['miou'] if val else None)} |",
        f"| untrained initial model, same data | {f1(ref['initial_model']['miou'])} | "
        f"{f1(ref['initial_model']['pixel_acc'])} | |",
        f"| random cluster assignment, same data | {f1(ref['random_assignment']['miou'])} | "
        f"{f1(ref['random_assignment']['pixel_acc'])} | |",
        "",
        f"Wall time {q['wall_seconds']:.0f} s on {q['machine']['cpus']} cores (set-up "
        f"{s['timings']['setup_s']:.0f} s, actors {s['timings']['start_s']:.0f} s, rounds "
        f"{s['timings']['rounds_s']:.0f} s), peak memory of the whole process tree "
        f"{q['peak_rss_mib']:,.0f} MiB, with 2 Ray actors of 5 clients each. The same config "
        "and seed give the same final metrics (`tests/test_simulation.py`), and the Ray "
        "executor is bit-identical to the sequential one (`tests/federation/test_executor.py`).",
        *server_actor_note(q),
        *first_step_note(q),
    ]


def server_actor_note(q: dict[str, Any]) -> list[str]:
    """The same command with the rounds in the driver, measured the same day."""
    d = load("quickstart-driver-loop.json")
    s, t = q["summary"], d["summary"]
    same = s["final"] == t["final"] and [r["miou"] for r in s["rounds"]] == [
        r["miou"] for r in t["rounds"]
    ]
    return [
        "",
        f"The rounds ran in a server actor (`summary.json`: `server.actor` "
        f"{str(s['server']['actor']).lower()}). The same command with "
        "`--set federation.server.actor=false`, which keeps them in the driver, measured "
        f"on {d['date']} (`docs/bench/quickstart-driver-loop.json`): wall "
        f"{d['wall_seconds']:.0f} s (rounds {t['timings']['rounds_s']:.0f} s), peak "
        f"{d['peak_rss_mib']:,.0f} MiB; the server actor costs "
        f"{q['wall_seconds'] / d['wall_seconds']:.2f}x the wall time and "
        f"{q['peak_rss_mib'] - d['peak_rss_mib']:+,.0f} MiB of resident memory (one more "
        "process with torch loaded), and the scores are "
        + ("bit-identical." if same else "**not** identical."),
    ]


def first_step_note(q: dict[str, Any]) -> list[str]:
    """The same command on the code before the fused client step, the same day: wall
    times here are of the day they were measured, and this machine's speed varies."""
    old = load("quickstart-f9efb07.json")
    o = old["summary"]
    return [
        "",
        f"On {old['date']} the same command at commit f9efb07 "
        f"(the first client step, `docs/bench/quickstart-f9efb07.json`) took "
        f"{old['wall_seconds']:.0f} s (rounds {o['timings']['rounds_s']:.0f} s) and ended at "
        f"test mIoU {o['final']['miou']:.4f}, against {q['summary']['final']['miou']:.4f} "
        "now: the fused step computes the same loss up to float32 rounding"
        + (
            ""
            if old["machine"].get("cpu") == q["machine"].get("cpu")
            else (
                ", and now runs on another CPU (the float kernels torch picks, and with "
                "them the last digits, depend on it; `machine.cpu` in the JSON)"
            )
        )
        + ". Wall times of "
        "other days are not comparable with these: this machine's speed changes from day to "
        "day (the same code ran the quickstart in 66 s on 2026-11-30).",
    ]


def study_section() -> list[str]:
    from fuss_ray.study.report import cells_table, write_report
    from fuss_ray.study.stats import setting_key

    study = load("study-benchmark.json")
    keys = [setting_key(s) for s in study["settings"]]
    figures = DOCS / "study-benchmark"
    figures.mkdir(exist_ok=True)
    write_report(study, figures)  # the same figures as the study's own report
    runs = study["runs"]
    total_s = sum(r["seconds"] or 0 for r in runs)
    base = study["base_config"]
    lines = [
        f"## The strategy benchmark: nine strategies, three settings, {len(study['seeds'])} seeds",
        "",
        "```bash",
        "fuss-ray study configs/studies/benchmark.yaml --out runs/studies/benchmark",
        "cp runs/studies/benchmark/study.json docs/bench/study-benchmark.json",
        "python tools/make_results.py",
        "```",
        "",
        "The synthetic benchmark (`configs/benchmark.yaml` as it was when the study ran; "
        f"it now trains longer, see below): {base['data']['num_images']} "
        f"scenes of {base['data']['num_classes']} texture classes at "
        f"{base['data']['image_size']} px (one fixed dataset, `data.seed: "
        f"{base['data']['seed']}`; a tenth of the training scenes set aside for validation), "
        f"{base['data']['num_eval_images']} test scenes, "
        f"{base['partition']['num_clients']} clients, {base['train']['rounds']} rounds x "
        f"{base['train']['local_steps']} local steps, every client every round. Seeds "
        f"{', '.join(map(str, study['seeds']))}: a seed fixes the partition, the validation "
        "carve-out, the initial model and every training draw, and within a setting all "
        "strategies share it (paired runs). Each strategy runs with the paper's settings "
        "(no tuning). The three settings: Dirichlet alpha 0.1 (extreme label skew), alpha "
        "1.0, and alpha 0.1 with `model.centroid_order: per_client`, where every client "
        "holds its centroids in an order of its own, which is where matching should matter. "
        f"{len(runs)} runs, {len(study['failed'])} failed; "
        f"{total_s / 60:.0f} minutes of run time in all, two at a time on 2 cores, so about "
        f"{total_s / 120:.0f} minutes of wall time{invocation(study, len(runs))}.",
        "",
        *budget_note(study),
        "Test mIoU, mean over seeds with the 95% bootstrap interval of the mean:",
        "",
        *cells_table(study, keys, with_n=False),
    ]
    lines += [
        "",
        f"Paired differences to `{study['baseline']}` (same seed, same setting): mean "
        "difference with its 95% bootstrap interval, two-sided Wilcoxon signed-rank p-value, "
        f"Holm-adjusted over the {len(study['strategies']) - 1} comparisons of a setting, "
        f"wins / losses of {len(study['seeds'])}:",
        "",
        "| setting | strategy | difference [95% CI] | p | Holm p | wins / losses | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += comparison_rows(study)
    lines += ["", "![test mIoU per setting](study-benchmark/miou.png)", ""]
    lines += ["![paired differences to FedAvg](study-benchmark/paired-differences.png)", ""]
    lines += alignment_lines(study, keys) + reading(study, keys)
    return lines


def comparison_rows(study: dict[str, Any]) -> list[str]:
    from fuss_ray.study.stats import setting_key

    return [
        f"| {setting_key(r['setting'])} | {r['strategy']} | {r['mean_diff']:+.1f} "
        f"[{f1(r['ci_low'])}, {f1(r['ci_high'])}] | {r['wilcoxon_p']:.3f} | "
        f"{r['wilcoxon_p_holm']:.3f} | {r['wins']} / {r['losses']} | {r['verdict']} |"
        for r in study["comparisons"]
    ]


def scores_and_differences(study: dict[str, Any], keys: list[str]) -> list[str]:
    """A study's cells (mean test mIoU with intervals) and its paired comparisons."""
    from fuss_ray.study.report import cells_table

    return [
        "Test mIoU, mean over seeds with the 95% bootstrap interval of the mean:",
        "",
        *cells_table(study, keys, with_n=False),
        "",
        f"Paired differences to `{study['baseline']}` (same seed), with the two-sided "
        "Wilcoxon signed-rank p-value, Holm-adjusted over the setting's comparisons:",
        "",
        "| setting | strategy | difference [95% CI] | p | Holm p | wins / losses | verdict |",
        "|---|---|---|---|---|---|---|",
        *comparison_rows(study),
        "",
    ]


def figure_lines(folder: str) -> list[str]:
    return [
        f"![test mIoU]({folder}/miou.png)",
        "",
        f"![learning curves]({folder}/learning-curves.png)",
        "",
    ]


def study_with_figures(name: str) -> tuple[dict[str, Any], list[str], float] | None:
    """docs/bench/NAME.json (None if it is not there), its figures written to docs/NAME/
    as the study's own report draws them; with its setting keys and run seconds."""
    from fuss_ray.study.report import write_report
    from fuss_ray.study.stats import setting_key

    path = DOCS / "bench" / f"{name}.json"
    if not path.is_file():
        return None
    study = json.loads(path.read_text())
    figures = DOCS / name
    figures.mkdir(exist_ok=True)
    write_report(study, figures)
    keys = [setting_key(s) for s in study["settings"]]
    return study, keys, float(sum(r["seconds"] or 0 for r in study["runs"]))


def regime_study() -> list[str]:
    """The first study in the chosen regime (a subset of the strategies and settings)."""
    loaded = study_with_figures("study-regime-first")
    if loaded is None:
        return []
    study, keys, total_s = loaded
    lines = [
        "## A first look at the new regime: four strategies, alpha 0.1, "
        f"{len(study['seeds'])} seeds",
        "",
        "```bash",
        "fuss-ray study configs/studies/regime-first.yaml --out runs/studies/regime-first",
        "cp runs/studies/regime-first/study.json docs/bench/study-regime-first.json",
        "python tools/make_results.py",
        "```",
        "",
        f"The benchmark as `configs/benchmark.yaml` now has it; {len(study['runs'])} runs, "
        f"{len(study['failed'])} failed, {total_s / 60:.0f} minutes of run time. Not yet "
        "the full study (every strategy, two settings, both centralised references).",
        "",
        *budget_note(study),
        *scores_and_differences(study, keys),
        *figure_lines("study-regime-first"),
    ]
    from fuss_ray.study.report import plateau_lines

    return lines + alignment_lines(study, keys) + plateau_lines(study)[3:] + [""]


FUSS = ("fuss-maximin", "fuss-kmeans")
REFERENCES = {"centralized-per-model": "per-model", "centralized-total": "total compute"}


def regime_full() -> list[str]:
    """The benchmark study in the chosen regime: every strategy, both centralised
    references, as many of its settings as have run (docs/bench/study-regime.json)."""
    from fuss_ray.study.report import plateau_lines

    loaded = study_with_figures("study-regime")
    if loaded is None:
        return []
    study, keys, total_s = loaded
    planned = yaml_settings(ROOT / "configs" / "studies" / "regime.yaml")
    lines = [
        f"## The benchmark study in the new regime: {len(study['strategies'])} strategies, "
        f"{len(keys)} of {len(planned)} settings, {len(study['seeds'])} seeds",
        "",
        "```bash",
        "fuss-ray study configs/studies/regime.yaml --out runs/studies/regime  # then --resume",
        "cp runs/studies/regime/study.json docs/bench/study-regime.json",
        "python tools/make_results.py",
        "```",
        "",
        f"{len(study['runs'])} runs, {len(study['failed'])} failed, {total_s / 60:.0f} "
        "minutes of run time. The runs trained with the client step of commit 5447cfd; the "
        "step since (a922538, docs/benchmarks.md) computes the same losses up to float32 "
        "rounding, so a rerun gives each run slightly different numbers (the quickstart's "
        "final test mIoU moved by 0.0004)."
        + (
            ""
            if len(keys) == len(planned)
            else (
                f" **Settings still to run: {', '.join(k for k in planned if k not in keys)}**. "
                "The finished runs' summaries are committed in `docs/bench/study-regime-state/` "
                "(the study's folder without its models): `cp -r docs/bench/study-regime-state "
                "runs/studies/regime`, then the study command with `--resume` runs only the "
                "rest."
            )
        ),
        "",
        *reference_budgets(study),
        *scores_and_differences(study, keys),
        *ratio_lines(study, keys),
        *regime_reading(study, keys),
        *figure_lines("study-regime"),
    ]
    return lines + alignment_lines(study, keys) + plateau_lines(study)[3:] + [""]


def regime_reading(study: dict[str, Any], keys: list[str]) -> list[str]:
    """What the study says, per setting, in words: FUSS against FedAvg, and every
    strategy that the paired tests call different from it."""
    from fuss_ray.study.stats import setting_key

    lines = []
    for key in keys:
        rows = {r["strategy"]: r for r in study["comparisons"] if setting_key(r["setting"]) == key}
        words = []
        for fuss in FUSS:
            r = rows.get(fuss)
            if r is not None:
                words.append(
                    f"{fuss} minus {study['baseline']} is {r['mean_diff']:+.1f} "
                    f"[{f1(r['ci_low'])}, {f1(r['ci_high'])}] (Holm p "
                    f"{r['wilcoxon_p_holm']:.3f}, {r['wins']} wins / {r['losses']} losses): "
                    f"{r['verdict']}"
                )
        others = [
            f"{s} ({r['mean_diff']:+.1f}, {r['verdict']})"
            for s, r in rows.items()
            if s not in FUSS and s not in REFERENCES and r["verdict"] != "no significant difference"
        ]
        means = {
            c["strategy"]: c["mean"] for c in study["cells"] if setting_key(c["setting"]) == key
        }
        federated = max(m for st, m in means.items() if st not in REFERENCES)
        above = [ref for ref in REFERENCES if ref in means and means[ref] > federated]
        text = f"Reading ({key}): " + "; ".join(words) + "."
        text += (
            f" Called different from {study['baseline']} after Holm's adjustment: "
            + (", ".join(others) if others else "no other federated strategy")
            + ". Centralised references above every federated strategy's mean: "
            + (", ".join(above) if above else "none")
            + "."
        )
        lines += [text, ""]
    return lines


def yaml_settings(path: Path) -> list[str]:
    """The settings a study file plans (their keys, as a study names them)."""
    import yaml

    from fuss_ray.study.stats import setting_key

    spec = yaml.safe_load(path.read_text())["study"]
    return [setting_key(s) for s in spec.get("settings") or [{}]]


def reference_budgets(study: dict[str, Any]) -> list[str]:
    """Each row's gradient steps, so the two centralised references read as what they are."""
    by_label = {r["strategy"]: r.get("budget") or {} for r in study["runs"]}
    fed = next(b for s, b in by_label.items() if s not in REFERENCES)
    out = [
        f"Budgets: every federated model takes {fed['model_steps']} gradient steps "
        f"({fed['local_steps_per_round']} local steps per round; "
        f"{fed['client_steps_total']} client steps in all over the federation)."
    ]
    for label, name in REFERENCES.items():
        if label in by_label:
            b = by_label[label]
            out.append(
                f"`{label}` is the **{name}** reference: one model holding every training "
                f"image, {b['model_steps']} gradient steps."
            )
    if any(label in by_label for label in REFERENCES):
        out.append(
            "A centralised model pools every client's images, so it does not see the "
            "partition: its row is the same in every heterogeneity setting."
        )
    return [" ".join(out), ""]


def ratio_lines(study: dict[str, Any], keys: list[str]) -> list[str]:
    """FUSS as a share of each centralised reference, seed-paired, with its interval."""
    from fuss_ray.study.stats import ratio_interval, setting_key

    scores: dict[tuple[str, str], dict[int, float]] = {}
    for r in study["runs"]:
        scores.setdefault((r["strategy"], setting_key(r["setting"])), {})[r["seed"]] = r[
            "test_miou"
        ]
    lines = []
    for key in keys:
        for fuss in FUSS:
            for ref, name in REFERENCES.items():
                a, b = scores.get((fuss, key), {}), scores.get((ref, key), {})
                seeds = sorted(set(a) & set(b))
                if len(seeds) < 2:
                    continue
                ratio, low, high = ratio_interval([a[s] for s in seeds], [b[s] for s in seeds], 0)
                lines.append(
                    f"| {key} | {fuss} / centralised ({name}) | {ratio:.2f} "
                    f"[{low:.2f}, {high:.2f}] | {len(seeds)} |"
                )
    if not lines:
        return []
    return [
        "FUSS over centralised training (the ratio of mean test mIoU, seeds paired, with "
        "its 95% bootstrap interval; the paper reports FUSS as such a share):",
        "",
        "| setting | ratio | value [95% CI] | seeds |",
        "|---|---|---|---|",
        *lines,
        "",
    ]


def budget_note(study: dict[str, Any]) -> list[str]:
    """Which centralised reference the study's `centralized` rows are, in gradient steps."""
    base = study["base_config"]
    k, rounds, steps = (
        base["partition"]["num_clients"],
        base["train"]["rounds"],
        base["train"]["local_steps"],
    )
    budgets = {(r.get("budget") or {}).get("centralized") for r in study["runs"]}
    budgets.discard(None)
    kind = budgets.pop() if len(budgets) == 1 else "total"  # runs before budgets were recorded
    if kind == "per_model":
        what = (
            f"the per-model reference: {rounds} x {steps} = {rounds * steps} steps, as one "
            "federated client's model takes"
        )
    else:
        what = (
            f"the total-compute reference: {rounds} x {k} x {steps} = {rounds * k * steps} "
            f"gradient steps on one model, against the {rounds} x {steps} = {rounds * steps} "
            "that each federated model takes (this study ran before `centralized` took a "
            "`budget`, when it always trained K x local steps per round; `budget: per_model`, "
            "now the default, trains like one federated client)"
        )
    return [
        f"Budgets: every federated model takes {rounds} x {steps} = {rounds * steps} "
        f"gradient steps; the `centralized` rows are {what}. A gap to centralised "
        "training here is partly a gap in gradient steps.",
        "",
    ]


def invocation(study: dict[str, Any], total: int) -> str:
    """How the study was run, when it was resumed: its last invocation's runs and wall time."""
    ran = study.get("runs_this_invocation")
    wall = study["wall_seconds_this_invocation"]
    if ran is None or ran < total:
        return (
            f" (it was interrupted and finished with `--resume`; the last invocation took "
            f"{wall / 60:.0f} minutes)"
        )
    return f" ({wall / 60:.0f} minutes measured)"


def alignment_lines(study: dict[str, Any], keys: list[str]) -> list[str]:
    """Where matching can matter: how often clients' centroids are not index-aligned."""
    from fuss_ray.study.stats import setting_key

    lines = [
        "Centroid alignment, averaged over rounds and seeds: the share of clients whose best "
        "one-to-one matching to the global centroids they started from is not the identity "
        "(what an exact OT plan finds), and the mean distance from a client's centroid k to "
        "global centroid k (what index-wise averaging pairs) and to its matched global "
        "centroid (what matching pairs):",
        "",
        "| setting | strategy | not the identity | distance by index | distance matched |",
        "|---|---|---|---|---|",
    ]
    for key in keys:
        for strategy in ("fedavg", "ot-match", "fuss-maximin"):
            mine = [
                r["alignment"]
                for r in study["runs"]
                if r["strategy"] == strategy
                and setting_key(r["setting"]) == key
                and r.get("alignment")
            ]
            if not mine:
                continue
            share = statistics.mean(a["misaligned"] for a in mine)
            by_index = statistics.mean(a["gap_index"] for a in mine)
            matched = statistics.mean(a["gap_matched"] for a in mine)
            lines.append(
                f"| {key} | {strategy} | {100 * share:.0f}% | {by_index:.2f} | {matched:.2f} |"
            )
    return [*lines, "", *matching_effect(study, keys), ""]


def matching_effect(study: dict[str, Any], keys: list[str]) -> list[str]:
    """Where OT matching's plan is not the identity: what it changed, from the runs."""
    from fuss_ray.study.stats import setting_key

    def per_seed(strategy: str, key: str) -> dict[int, float]:
        return {
            r["seed"]: r["test_miou"]
            for r in study["runs"]
            if r["strategy"] == strategy and setting_key(r["setting"]) == key
        }

    def cell(strategy: str, key: str) -> str:
        c = next(
            c
            for c in study["cells"]
            if c["strategy"] == strategy and setting_key(c["setting"]) == key
        )
        return f"{f1(c['mean'])} [{f1(c['ci_low'])}, {f1(c['ci_high'])}]"

    lines = []
    ot = "ot-match"
    for key in keys:
        runs = [r for r in study["runs"] if setting_key(r["setting"]) == key]
        moved = [
            r["alignment"]["misaligned"] for r in runs if r["strategy"] == ot and r.get("alignment")
        ]
        if not moved or statistics.mean(moved) == 0:
            continue
        row = next(
            r
            for r in study["comparisons"]
            if r["strategy"] == ot and setting_key(r["setting"]) == key
        )
        setting = dict(runs[0]["setting"])
        setting.pop("model.centroid_order", None)
        shared = setting_key(setting)
        base = study["baseline"]
        text = (
            f"Where matching matters ({key}): ot-match's plan is not the identity for "
            f"{100 * statistics.mean(moved):.0f}% of client updates. Its test mIoU is "
            f"{cell(ot, key)} against {base}'s {cell(base, key)}, a paired difference of "
            f"{row['mean_diff']:+.1f} [{f1(row['ci_low'])}, {f1(row['ci_high'])}] "
            f"({row['verdict']})."
        )
        if shared in keys and shared != key:  # a setting of its own order, beside the shared
            if per_seed(ot, key) == per_seed(ot, shared):
                text += (
                    " Seed for seed, ot-match gives exactly the scores it gives when every "
                    f"client keeps the shared order ({shared}): matching undoes each client's "
                    "order completely, so the order costs it nothing."
                )
            text += (
                f" {base}'s index-wise mean pairs unrelated centroids (the distances above), "
                f"which pulls the global centroids together; its score is {cell(base, key)} "
                f"here against {cell(base, shared)} with the shared order."
            )
        lines.append(text)
    return lines


def reading(study: dict[str, Any], keys: list[str]) -> list[str]:
    """What the tables say, in words generated from their own numbers."""
    from fuss_ray.study.stats import setting_key

    lines = ["What it says:", ""]
    for key in keys:
        rows = [r for r in study["comparisons"] if setting_key(r["setting"]) == key]
        better = [r["strategy"] for r in rows if r["verdict"] == "better than the baseline"]
        worse = [r["strategy"] for r in rows if r["verdict"] == "worse than the baseline"]
        same = [r["strategy"] for r in rows if r["verdict"] == "no significant difference"]
        best = max(
            (c for c in study["cells"] if setting_key(c["setting"]) == key),
            key=lambda c: c["mean"],
        )
        parts = [f"- **{key}**: the highest mean is {best['strategy']} ({f1(best['mean'])})."]
        if better:
            parts.append(f" Significantly better than {study['baseline']}: {', '.join(better)}.")
        if worse:
            parts.append(f" Significantly worse: {', '.join(worse)}.")
        if same:
            parts.append(f" No significant difference from {study['baseline']}: {', '.join(same)}.")
        lines.append("".join(parts))
    n, m = len(study["seeds"]), len(study["strategies"]) - 1
    lines += [
        f"- A verdict needs the Holm-adjusted Wilcoxon p-value below 0.05. With {n} paired "
        f"seeds the smallest two-sided p-value is 2/{2**n} = {2 / 2**n:.4f} (all {n} "
        f"differences of one sign), so after adjusting for {m} comparisons "
        f"(smallest possible: {study['smallest_possible_holm_p']:.3f}) only effects that hold "
        "on (nearly) every seed can be called; the intervals show the size of what could not.",
        "",
    ]
    return lines


def regime() -> list[str]:
    """The budget search behind configs/benchmark.yaml's training settings."""
    r = load("regime-search.json")
    base = ", ".join(f"{k}={v}" for k, v in r["base"].items())
    lines = [
        "## Which budget lets strategies differ",
        "",
        "```bash",
        r["command"],
        "```",
        "",
        "FedCC and optimal-transport matching are for clients whose centroids drift out of "
        "the shared index order; the study above trained 48 steps per client, where no "
        f"client's did. Each candidate ran {base} on the benchmark as the study above had "
        "it (8 local steps, centroid learning rate 5e-3, 11 x 11 sample points), changed "
        "as its name says; "
        f"{r['summary'][0]['seeds']} seeds; 'misaligned' is the largest share of clients, "
        "over rounds and seeds, whose centroids' best one-to-one match to the global ones "
        "they started from is not the identity; a candidate has plateaued when its mean "
        "validation gain over the last quarter of rounds is at most the seed spread.",
        "",
        "| candidate | steps per client | seconds per run | misaligned | last-quarter gain "
        "| seed spread | plateaued | test mIoU per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["summary"]:
        p = row["plateau"]
        mark = " (chosen)" if row["candidate"] == r["chosen"] else ""
        scores = ", ".join(f1(x) for x in row["test_miou"])
        lines.append(
            f"| {row['candidate']}{mark} | {row['steps_per_client']} | "
            f"{row['seconds_per_run']:.0f} | {row['max_misaligned']:.0%} | "
            f"{p['gain_last_quarter']:+.1f} | {p['seed_spread']:.1f} | "
            f"{'yes' if p['plateaued'] else 'no'} | {scores} |"
        )
    import yaml

    code_dim = yaml.safe_load((ROOT / "configs" / "benchmark.yaml").read_text())
    code_dim = (code_dim.get("model") or {}).get("code_dim", 70)

    def first_gap(name: str) -> float:
        gaps = [run["gap_index"][0] for run in r["runs"] if run["candidate"] == name]
        return float(sum(gaps)) / len(gaps)

    chosen = next(row for row in r["summary"] if row["candidate"] == r["chosen"])
    slow = next(row for row in r["summary"] if row["steps_per_client"] >= 480)
    lines += [
        "",
        f"The chosen candidate ({r['chosen']}) is the cheapest with at least 480 steps per "
        "client, a plateau and drift; `configs/benchmark.yaml` now trains with it. Drift "
        "needs the centroids to move: at the paper's centroid learning rate (5e-3) a "
        f"client's centroid ends its first round ({slow['candidate']}) "
        f"{first_gap(slow['candidate']):.1f} from where it started, against about "
        f"{(2 * code_dim) ** 0.5:.0f} between two initial centroids (standard normal in "
        f"{code_dim} dimensions), and no client's centroids leave the order; at 0.05 they "
        f"move {first_gap(chosen['candidate']):.1f}, and up to "
        f"{chosen['max_misaligned']:.0%} of the clients' leave it in a round. Its seed "
        "spread is among the largest of the candidates', so two seeds show its plateau "
        "weakly. The study above (48 steps per client) is not rerun on it; the studies "
        "below run in it.",
        "",
    ]
    return lines


def calibration() -> list[str]:
    c = load("benchmark-calibration.json")
    lines = [
        "## Sizing the benchmark",
        "",
        "```bash",
        c["command"],
        "```",
        "",
        "The centralised reference (all training scenes on one client) over "
        f"{c['rows'][0]['seeds']} seeds, for each candidate size; the bar is a seed standard "
        "deviation of at most "
        f"{c['bar_miou_std']:.0f} mIoU:",
        "",
        "| candidate | test mIoU mean | seed std | seconds per run |",
        "|---|---|---|---|",
    ]
    import yaml

    committed = yaml.safe_load((ROOT / "configs" / "benchmark.yaml").read_text())
    chosen = None
    for r in c["rows"]:
        size = ", ".join(f"{k.removeprefix('data.')}={v}" for k, v in r["size"].items())
        mine = all(lookup(committed, k) == v for k, v in r["size"].items())
        chosen = r if mine else chosen
        lines.append(
            f"| {size}{' (committed)' if mine else ''} | {f1(r['miou_mean'])} | "
            f"{f1(r['miou_std'])} | {r['seconds_per_run']:.0f} |"
        )
    if chosen is not None:
        bar = c["bar_miou_std"]
        verdict = (
            "within the bar"
            if chosen["miou_std"] <= bar
            else f"above the bar of {bar:.0f}: the bar is not reached at a size that fits the "
            "study's time budget, so the study's intervals above are wider than hoped, and "
            "the study pairs runs by seed so that this spread cancels out of the differences"
        )
        lines += [
            "",
            f"The committed benchmark's centralised seed standard deviation is "
            f"{f1(chosen['miou_std'])} mIoU, {verdict}.",
        ]
    return [*lines, ""]


def lookup(config: dict[str, Any], dotted: str) -> Any:
    """A dotted key's value in a nested config (None where absent)."""
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def many_clients() -> list[str]:
    m = load("many-clients.json")
    s = m["summary"]
    rounds = s["rounds"]
    return [
        "## Many clients: 200 logical clients in 2 actors",
        "",
        "```bash",
        f"python tools/measure_run.py --json docs/bench/many-clients.json -- {m['command']}",
        "```",
        "",
        f"200 clients (Dirichlet alpha 1.0 over 1000 scenes, {s['client_sizes']['min']} to "
        f"{s['client_sizes']['max']} images each), 2 Ray actors of 100 clients at 1 CPU each, "
        f"{s['clients_per_round']} clients sampled per round, {len(rounds)} rounds, "
        f"`{s['strategy']}`: test mIoU "
        + ", ".join(f1(r["miou"]) for r in rounds)
        + f" after rounds 1-{len(rounds)} (random assignment "
        f"{f1(s['reference']['random_assignment']['miou'])}); "
        + ", ".join(f"{r['seconds']:.1f}" for r in rounds)
        + f" s per round. Peak memory of the whole process tree: **{m['peak_rss_mib']:,.0f} "
        f"MiB**, {m['wall_seconds']:.0f} s wall time.",
        "",
    ]


def protocol() -> list[str]:
    p = load("protocol-options.json")
    rows = p["rows"]
    random_row = next(r for r in rows if r.get("features") == "random")
    plain = next(
        r
        for r in rows
        if r.get("features") == "pretrained"
        and not r["five_crop"]
        and r["eval_side"] == 224
        and r["variant"] == "plain"
    )
    lines = [
        "## Real pixels offline: the packaged nuclei image",
        "",
        "```bash",
        p["command"] + " --json docs/bench/protocol-options.json",
        "```",
        "",
        "stardist's 512 x 512 fluorescence nuclei image with its masks, tiled into 128 px "
        "training tiles (stride 64) above a held-out band of test tiles; 2 IID clients, "
        "`fuss-maximin`, 2 rounds x 40 local steps, EfficientNet-Lite0, sequential executor. "
        f"Pretrained (ImageNet) features: {f1(plain['mean'])} ± {f1(plain['std'])} test mIoU "
        f"(seeds {', '.join(map(str, p['seeds']))}: "
        + ", ".join(f1(v) for v in plain["miou"])
        + f"); a randomly initialised backbone: {f1(random_row['mean'])} ± "
        f"{f1(random_row['std'])} ("
        + ", ".join(f1(v) for v in random_row["miou"])
        + "). `tests/test_packaged_real.py` requires a margin of at least 10 points.",
        "",
        "The paper's preprocessing options, each on and off (pretrained features): five-crop "
        "training x evaluation side (224 px images with 112 px labels, or 320 with 320), each "
        "run reported plain, with flip test-time augmentation, with the dense CRF and both:",
        "",
        "| five-crop | eval side | test-time | test mIoU (mean ± std) | per seed |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("features") == "random":
            continue
        lines.append(
            f"| {'on' if r['five_crop'] else 'off'} | {r['eval_side']} | {r['variant']} | "
            f"{f1(r['mean'])} ± {f1(r['std'])} | {', '.join(f1(v) for v in r['miou'])} |"
        )
    lines += [
        "",
        "Five-crop is the paper's protocol for full-size photographs (Cityscapes' 2048 x "
        "1024), where crops stay larger than the backbone's input; on 128 px tiles the crops "
        "are 64 px, enlarged 3.5 times, which is why it is on in the paper presets and off by "
        "default.",
        "",
    ]
    return lines


def main() -> None:
    lines = [
        "# Results",
        "",
        "Made by `python tools/make_results.py` from the JSON files under `docs/bench/`; "
        "each section names the command that wrote its file. Machine: the project's "
        "development machine, 2 CPU cores, 24 GiB, no GPU (torch 2.14.1 on the CPU, ray "
        "2.60, Python 3.11). Test scores are on each dataset's test split; nothing here "
        "was selected on them.",
        "",
        *quickstart(),
        "",
        *study_section(),
        *regime(),
        *regime_study(),
        *regime_full(),
        *calibration(),
        *many_clients(),
        *protocol(),
    ]
    (DOCS / "results.md").write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {DOCS / 'results.md'}")


if __name__ == "__main__":
    main()
