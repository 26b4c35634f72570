"""quality.json -> quality.md: one table per task, the skipped peers, and the issue's targets."""

from __future__ import annotations

from pathlib import Path

from peers import PEER_TITLES

TASK_TITLES = {
    "cifar10": "CIFAKE: the 10 CIFAR-10 classes, REAL and FAKE together (K=10), held-out images",
    "real_fake": "CIFAKE: REAL vs FAKE (K=2), held-out images",
    "digits": "scikit-learn digits (K=10), fitted and scored on all {digits:,}",
    "digits_tail": "long-tailed scikit-learn digits (K=10), fitted and scored on all {digits_tail:,}",
    "mnist": "MNIST (K=10), held-out images",
}
ISSUE4_TARGETS = {  # what a results file without its own "targets" was judged against
    "issue": 4,
    "cifar10_acc": 0.35,
    "cifar10_nmi": 0.25,
    "real_fake_auroc": 0.80,
    "digits_acc": 0.90,
    "mnist_acc": 0.95,
    "fit_16k_minutes": 15.0,
}
TARGETS = {  # issue 13 (means over seeds, held-out images, defaults); quality.py stores them in its JSON
    **ISSUE4_TARGETS,
    "issue": 13,
    "cifar10_acc": 0.50,
    "cifar10_nmi": 0.35,
    "digits_acc": 0.92,
}
SCORE_COLUMNS = (
    ("nll", "AUROC NLL"),
    ("uncertainty", "AUROC 1-maxP"),
    ("recon", "AUROC recon"),
    ("high_frequency", "AUROC high-freq"),
)


def title(row: dict) -> str:
    if row["method"] == "aegmm":
        return f"aegmm ({row['variant']})"
    return PEER_TITLES.get(row["method"], row["method"])


def _wall_cpu(cost: dict) -> str:
    cpu = cost.get("cpu_seconds")
    return f"{cost['seconds']:.1f}" if cpu is None else f"{cost['seconds']:.1f} ({cpu:.0f})"


def seconds(row: dict) -> str:
    """Peers: fit + score. aegmm: ImageClusterer.fit (shared by the tasks) + this task's mixture."""
    if row["method"] == "aegmm":
        return f"{_wall_cpu(row['train']['fit'])} + {_wall_cpu(row['time'])}"
    return _wall_cpu(row["time"])


def memory(row: dict) -> str:
    peak = row["time"]["peak_rss_mib"]
    if row["method"] == "aegmm":
        peak = max(peak, row["train"]["fit"]["peak_rss_mib"], row["train"]["reconstruct"]["peak_rss_mib"])
    return f"{peak:.0f}"


def _auroc_cell(row: dict, name: str) -> str:
    scores = row.get("scores", {})
    if name == "nll" and "distance" in scores:
        name = "distance"  # K-Means: distance to the nearest centroid takes the NLL's place
    if name not in scores:
        return "-"
    s = scores[name]
    return f"{s['auroc']:.3f} ({s['separation']:.3f})"


def task_table(rows: list[dict], task: str) -> list[str]:
    if task == "real_fake":
        scores = " | ".join(t for _, t in SCORE_COLUMNS)
        head = f"| method | acc | NMI | {scores} | time s | peak RSS MiB |"
    else:
        head = "| method | acc | NMI | ARI | time s | peak RSS MiB |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for row in rows:
        m = row["metrics"]
        cells = [title(row), f"{m['acc']:.3f}", f"{m['nmi']:.3f}"]
        if task == "real_fake":
            cells += [_auroc_cell(row, name) for name, _ in SCORE_COLUMNS]
        else:
            cells.append(f"{m['ari']:.3f}")
        cells += [seconds(row), memory(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def seed_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows of one task by method title (aegmm: per variant), in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(title(row), []).append(row)
    return groups


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd (0 for one value)."""
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return mean, sd


def _fit_seconds(row: dict) -> float:
    if row["method"] == "aegmm":
        return row["train"]["fit"]["seconds"] + row["time"]["seconds"]
    return row["time"]["seconds"]


def summary_table(rows: list[dict], task: str) -> list[str]:
    """mean +- sd over the seeds of each method (sample sd; n = the seeds it ran with)."""
    columns = [("acc", lambda r: r["metrics"]["acc"]), ("NMI", lambda r: r["metrics"]["nmi"])]
    if task == "real_fake":
        columns += [
            (label, lambda r, n=name: r["scores"][n]["auroc"] if n in r.get("scores", {}) else None)
            for name, label in SCORE_COLUMNS
        ]
    else:
        columns.append(("ARI", lambda r: r["metrics"]["ari"]))
    head = "| method | seeds | " + " | ".join(c for c, _ in columns) + " | time s, mean |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for name, members in seed_groups(rows).items():
        cells = [name, ",".join(str(r.get("seed", "-")) for r in members)]
        for _, get in columns:
            values = [get(r) for r in members]
            if any(v is None for v in values):
                cells.append("-")
                continue
            mean, sd = mean_sd(values)
            cells.append(f"{mean:.3f} ± {sd:.3f}")
        cells.append(f"{mean_sd([_fit_seconds(r) for r in members])[0]:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def multi_seed(report: dict) -> bool:
    return len(report.get("settings", {}).get("seeds", [])) > 1


def _best(rows, task, key):
    candidates = [r for r in rows if r.get("task") == task]
    return max(candidates, key=key, default=None)


def _best_auroc(row: dict) -> float:
    return max((s["auroc"] for s in row.get("scores", {}).values()), default=0.0)


def _best_separation(row: dict) -> float:
    return max((s["separation"] for s in row.get("scores", {}).values()), default=0.0)


def averaged(runs: list[dict]) -> list[dict]:
    """One row per (task, method or variant): metrics and AUROCs averaged over its seeds, with the
    sample sd of acc and NMI in `spread` and the mean fit time in train.fit.seconds."""
    out = []
    for task in dict.fromkeys(r["task"] for r in runs):
        for members in seed_groups([r for r in runs if r["task"] == task]).values():
            row = dict(members[0])
            row["metrics"] = {k: mean_sd([r["metrics"][k] for r in members])[0] for k in row["metrics"]}
            row["spread"] = {k: mean_sd([r["metrics"][k] for r in members])[1] for k in ("acc", "nmi")}
            if "scores" in row:
                row["scores"] = {
                    name: {k: mean_sd([r["scores"][name][k] for r in members])[0] for k in value}
                    for name, value in row["scores"].items()
                }
            if "train" in row:
                fit = mean_sd([r["train"]["fit"]["seconds"] for r in members])[0]
                row["train"] = {**row["train"], "fit": {**row["train"]["fit"], "seconds": fit}}
            out.append(row)
    return out


def margin_lines(rows: list[dict]) -> list[str]:
    """Per task: the best aegmm mean minus the best peer mean, against the larger seed spread."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for metric in ("acc", "nmi"):
            key = lambda r, m=metric: r["metrics"][m]  # noqa: E731
            mine = _best([r for r in rows if r["method"] == "aegmm"], task, key)
            peer = _best([r for r in rows if r["method"] != "aegmm"], task, key)
            if mine is None or peer is None:
                continue
            margin = key(mine) - key(peer)
            spread = max(mine["spread"][metric], peer["spread"][metric])
            verdict = "yes" if margin > spread else "no"
            lines.append(
                f"| {task} {metric} | {key(mine):.3f} ({title(mine)}) | {key(peer):.3f} ({title(peer)}) | "
                f"{margin:+.3f} | {spread:.3f} | {verdict} |"
            )
    if not lines:
        return []
    head = "| task | best aegmm, mean | best peer, mean | margin | larger sd | margin > sd |"
    return [head, "| --- | --- | --- | --- | --- | --- |", *lines]


def target_lines(report: dict) -> list[str]:
    runs = [r for r in report["runs"] if "metrics" in r]
    if multi_seed(report):
        runs = averaged(runs)
    targets = report.get("targets", ISSUE4_TARGETS)
    ours = [r for r in runs if r["method"] == "aegmm"]
    lines = ["| target | goal | best aegmm | best peer | met by aegmm |", "| --- | --- | --- | --- | --- |"]
    checks = (
        ("CIFAR classes acc", "cifar10", lambda r: r["metrics"]["acc"], targets["cifar10_acc"]),
        ("CIFAR classes NMI", "cifar10", lambda r: r["metrics"]["nmi"], targets["cifar10_nmi"]),
        ("REAL vs FAKE label-free AUROC", "real_fake", _best_auroc, targets["real_fake_auroc"]),
        ("(REAL vs FAKE max(AUROC, 1-AUROC))", "real_fake", _best_separation, targets["real_fake_auroc"]),
        ("digits acc", "digits", lambda r: r["metrics"]["acc"], targets["digits_acc"]),
        ("MNIST held-out acc", "mnist", lambda r: r["metrics"]["acc"], targets["mnist_acc"]),
    )
    for name, task, key, goal in checks:
        mine = _best(ours, task, key)
        peer = _best([r for r in runs if r["method"] != "aegmm"], task, key)
        if mine is None and peer is None:
            continue
        show = lambda r, key=key: "-" if r is None else f"{key(r):.3f} ({title(r)})"  # noqa: E731
        met = "-" if mine is None else ("yes" if key(mine) >= goal else f"no ({key(mine) - goal:+.3f})")
        lines.append(f"| {name} | >= {goal} | {show(mine)} | {show(peer)} | {met} |")
    fits = [
        r
        for r in ours
        if r.get("variant") == "default" and r.get("task") == "cifar10" and "cifake" in report["datasets"]
    ]
    if fits:
        minutes = fits[0]["train"]["fit"]["seconds"] / 60
        n = report["datasets"]["cifake"]["fit_images"]
        goal = targets["fit_16k_minutes"]
        met = "yes" if minutes <= goal and n >= 16000 else ("no" if n >= 16000 else f"n/a ({n:,} images)")
        shown = f"{minutes:.1f} min on {n:,}"
        lines.append(f"| fit on 16k images (defaults) | <= {goal} min | {shown} | - | {met} |")
    if multi_seed(report):
        lines += ["", "Means over the seeds. Margins over the best peer:", "", *margin_lines(runs)]
    return lines


def write_markdown(report: dict, path: Path) -> None:
    start, end = report["machine_start"], report.get("machine_end", {})
    lines = [
        "# Clustering quality: aegmm against peers",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {start['cpu_count']} CPU cores, torch threads {start['torch_threads']}, torch "
        f"{start['torch']}, scikit-learn {start['sklearn']}; started {start['date']}, load average "
        f"{start['load_average']} at start and {end.get('load_average', '(running)')} at the end. "
        + (
            "Other jobs shared the cores (1-minute load average above 1 at the start), so the times "
            "here are pessimistic."
            if start["load_average"][0] > 1.0
            else "1-minute load average below 1 at the start."
        ),
        "",
    ]
    base = report.get("settings", {}).get("base")
    if base:
        shown = ", ".join(f"{k}={v}" for k, v in base.items())
        lines += [
            f"**Smoke run**: every aegmm row used {shown}; these numbers say nothing about quality.",
            "",
        ]
    for name, info in report["datasets"].items():
        lines.append(f"- **{name}**: " + "; ".join(f"{k}: {v}" for k, v in info.items()))
    lines += [
        "",
        "acc = accuracy after the best one-to-one matching of clusters to labels (Hungarian). "
        "AUROC cells: the value with the score's orientation fixed beforehand (higher = FAKE: NLL, "
        "1 - max posterior, K-Means distance to the nearest centroid; recon: AEROBLADE's orientation, "
        "lower reconstruction error = FAKE; high-freq: aegmm's image score, more energy next to the "
        "Nyquist frequency = FAKE, as in Durall et al. 2020), then in brackets max(AUROC, 1 - AUROC), "
        "which chooses the sign with the labels as the Hungarian matching does. NLL and 1-maxP come "
        "from the K=2 model. "
        "time s: wall seconds (CPU seconds of the process in brackets; on 2 cores CPU / wall well "
        "below 2 means other jobs held the cores or the process was paused); peers fit + score; "
        "aegmm `ImageClusterer.fit` (training, shared by the tasks and by mixture-only variants) + "
        "this task's mixture refit. peak RSS: highest resident memory "
        "of the whole process sampled during the method (it includes the loaded data sets).",
        "",
    ]
    runs = [r for r in report["runs"] if "metrics" in r]
    sizes = {
        name: report["datasets"].get(name, {}).get("fit_images", 0) for name in ("digits", "digits_tail")
    }
    for task, heading in TASK_TITLES.items():
        rows = [r for r in runs if r["task"] == task]
        if not rows:
            continue
        lines += [f"## {heading.format(**sizes)}", ""]
        if multi_seed(report):
            lines += ["Mean ± sd over the seeds:", "", *summary_table(rows, task), "", "Each seed:", ""]
        lines += [*task_table(rows, task), ""]
    skipped = [r for r in report["runs"] if "skipped" in r]
    if skipped:
        lines += ["## Not run", ""]
        seen = set()
        for r in skipped:
            if r["method"] not in seen:
                seen.add(r["method"])
                lines.append(f"- {PEER_TITLES.get(r['method'], r['method'])}: {r['skipped']}")
        lines.append("")
    issue = report.get("targets", ISSUE4_TARGETS)["issue"]
    lines += [f"## Issue {issue} targets", "", *target_lines(report), ""]
    if "total_seconds" in report:
        lines.append(
            f"Total run time {report['total_seconds'] / 60:.1f} min; process peak RSS "
            f"{report['max_rss_mib']:.0f} MiB (ru_maxrss)."
        )
    lines += ["", *report.get("notes", [])]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    """Rewrite quality.md from quality.json (after adding `notes` to the JSON, for example)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="quality.json -> quality.md beside it")
    parser.add_argument("json_path", type=Path)
    args = parser.parse_args(argv)
    report = json.loads(args.json_path.read_text())
    write_markdown(report, args.json_path.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
