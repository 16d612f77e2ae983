"""Text tables, the summary, the JSON document and the Markdown page."""

from __future__ import annotations

import json
import math
import sys
from typing import TextIO

from .harness import (ANCHOR, OK, SHMKIT, CaseResult, Figure, Metric, Scenario, ScenarioResult,
                      ratio)

from .schema import SCHEMA  # noqa: E402  (one definition of the format name)

def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit.endswith("/s") and unit != "GB/s":
        for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= div:
                return f"{value / div:.3g}{suffix}"
        return f"{value:.3g}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def fmt_ratio(r: float | None) -> str:
    if r is None or math.isnan(r):
        return "—"
    return f"{r:,.0f}×" if r >= 1000 else f"{r:.3g}×"


def fmt_range(f: Figure, unit: str) -> str:
    return f"{fmt(f.min, unit)}–{fmt(f.max, unit)}"


def direction(m: Metric) -> str:
    return "higher is better" if m.higher_is_better else "lower is better"


def metric_header(m: Metric) -> str:
    return f"{m.name} ({m.unit})"


# -- text tables, printed row by row while the cases run --------------------------------

LABEL_W = 40
KIND_W = 10
VALUE_W = 10
RANGE_W = 21
RATIO_W = 9


class TextTable:
    def __init__(self, scenario: Scenario, out: TextIO = sys.stdout, reps: int = 5):
        self.sc = scenario
        self.out = out
        self.reps = reps

    def header(self) -> None:
        sc, w = self.sc, self.out.write
        w(f"\n== {sc.name}: {sc.title}\n")
        units = "; ".join(f"{m.name} in {m.unit}, {direction(m)}" for m in sc.metrics)
        w(f"   {units}; median of {self.reps} runs [min–max]; ratio = vs best anchor (> 1: better)\n")
        line = f"   {'implementation':<{LABEL_W}} {'kind':<{KIND_W}}"
        for m in sc.metrics:
            line += f" {m.name:>{VALUE_W}} {'[min–max]':<{RANGE_W}} {'ratio':>{RATIO_W}}"
        w(line.rstrip() + "\n")
        self.out.flush()

    def row(self, r: CaseResult, best: dict[str, CaseResult]) -> None:
        line = f"   {r.label:<{LABEL_W}} {r.kind:<{KIND_W}}"
        if r.status != OK:
            line += f" {r.status}: {r.note}"
        else:
            for m in self.sc.metrics:
                f = r.figures.get(m.name)
                if f is None:
                    line += f" {'—':>{VALUE_W}} {'':<{RANGE_W}} {'':>{RATIO_W}}"
                    continue
                rt = ""
                if r.kind != ANCHOR and m.name in best:
                    rt = fmt_ratio(ratio(m, f.median, best[m.name].figures[m.name].median))
                line += f" {fmt(f.median, m.unit):>{VALUE_W}} {'[' + fmt_range(f, m.unit) + ']':<{RANGE_W}} {rt:>{RATIO_W}}"
            if r.note:
                line += f"  ({r.note})"
        self.out.write(line.rstrip() + "\n")
        self.out.flush()

    def footer(self, res: ScenarioResult) -> None:
        w = self.out.write
        for m in self.sc.metrics:
            best = res.best_anchor.get(m.name)
            if best is not None:
                w(f"   best anchor ({m.name}): {best.label}, {fmt(best.figures[m.name].median, m.unit)} {m.unit}\n")
            else:
                w(f"   best anchor ({m.name}): none measured\n")
        if self.sc.bar is not None:
            w(f"   bar: {self.sc.bar.text}  -> {met_text(res.bar_met)}\n")
        self.out.flush()


def met_text(met: bool | None) -> str:
    return {True: "met", False: "not met", None: "not judged"}[met]


# -- summary ----------------------------------------------------------------------------

def summary_rows(results: list[ScenarioResult]) -> list[dict]:
    rows = []
    for res in results:
        m = res.scenario.primary
        best_shmkit = res.best(m, SHMKIT)
        shmkit_rows = [r for r in res.rows if r.kind == SHMKIT]
        anchor = res.best_anchor.get(m.name)
        if best_shmkit is not None:
            shmkit_text = fmt(best_shmkit.figures[m.name].median, m.unit)
            shmkit_status = OK
        elif shmkit_rows:
            shmkit_text = shmkit_rows[0].status
            shmkit_status = shmkit_rows[0].status
        else:
            shmkit_text, shmkit_status = "—", None
        rows.append({
            "scenario": res.scenario.name,
            "metric": m.name,
            "unit": m.unit,
            "higher_is_better": m.higher_is_better,
            "shmkit_label": best_shmkit.label if best_shmkit else None,
            "shmkit": best_shmkit.figures[m.name].median if best_shmkit else None,
            "shmkit_status": shmkit_status,
            "shmkit_text": shmkit_text,
            "best_anchor_label": anchor.label if anchor else None,
            "best_anchor": anchor.figures[m.name].median if anchor else None,
            "ratio": best_shmkit.ratios.get(m.name) if best_shmkit else None,
            "bar": res.scenario.bar.text if res.scenario.bar else None,
            "bar_met": res.bar_met,
        })
    return rows


def print_summary(results: list[ScenarioResult], out: TextIO = sys.stdout) -> None:
    rows = summary_rows(results)
    table = [["scenario", "unit", "shmkit", "best anchor", "ratio", "bar", "bar met"]]
    for r in rows:
        anchor = (f"{r['best_anchor_label']} {fmt(r['best_anchor'], r['unit'])}"
                  if r["best_anchor_label"] else "none measured")
        table.append([r["scenario"], r["unit"], r["shmkit_text"], anchor, fmt_ratio(r["ratio"]),
                      r["bar"] or "—", met_text(r["bar_met"]) if r["bar"] else "—"])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    out.write("\n== summary: shmkit (best shmkit row) vs the best anchor, medians; ratio > 1: shmkit better\n")
    for k, row in enumerate(table):
        out.write("   " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")
        if k == 0:
            out.write("   " + "  ".join("-" * w for w in widths) + "\n")
    out.flush()


# -- JSON -------------------------------------------------------------------------------

def _num(x):
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return None
    return x


def to_json(meta: dict, results: list[ScenarioResult]) -> dict:
    scenarios = []
    for res in results:
        sc = res.scenario
        rows = []
        for r in res.rows:
            rows.append({
                "label": r.label,
                "kind": r.kind,
                "status": r.status,
                "note": r.note,
                "n": r.n,
                "seconds": round(r.seconds, 3),
                "figures": {name: {"median": _num(f.median), "min": _num(f.min), "max": _num(f.max),
                                   "values": [_num(v) for v in f.values]}
                            for name, f in r.figures.items()},
                "ratio_to_best_anchor": {k: _num(v) for k, v in r.ratios.items()},
            })
        scenarios.append({
            "name": sc.name,
            "group": sc.group,
            "title": sc.title,
            "description": sc.description,
            "metrics": [{"name": m.name, "unit": m.unit, "higher_is_better": m.higher_is_better}
                        for m in sc.metrics],
            "bar": {"text": sc.bar.text, "met": res.bar_met} if sc.bar else None,
            "best_anchor": {k: {"label": v.label, "median": _num(v.figures[k].median)}
                            for k, v in res.best_anchor.items()},
            "rows": rows,
        })
    summary = [{k: _num(v) if isinstance(v, float) else v for k, v in row.items()}
               for row in summary_rows(results)]
    return {"schema": SCHEMA, **meta, "scenarios": scenarios, "summary": summary}


def write_json(path: str, doc: dict) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False, allow_nan=False)
        f.write("\n")


# -- rebuilding results from a JSON document (for --from-json) -------------------------

def results_from_json(doc: dict, scenarios_by_name: dict[str, Scenario]) -> list[ScenarioResult]:
    from .harness import Bar

    out = []
    for s in doc["scenarios"]:
        sc = scenarios_by_name.get(s["name"])
        metrics = [Metric(m["name"], m["unit"], m["higher_is_better"]) for m in s["metrics"]]
        bar = Bar(s["bar"]["text"]) if s.get("bar") else None
        if sc is None or [m.name for m in sc.metrics] != [m.name for m in metrics]:
            sc = Scenario(s["name"], s["group"], s["title"], s["description"], metrics,
                          cases=lambda opts: [], bar=bar)
        res = ScenarioResult(sc)
        for r in s["rows"]:
            cr = CaseResult(r["label"], r["kind"], r["status"], r["note"], r.get("n"))
            cr.seconds = r.get("seconds", 0.0)
            for name, f in r["figures"].items():
                cr.figures[name] = Figure(f["median"], f["min"], f["max"], f["values"])
            cr.ratios = {k: v for k, v in r.get("ratio_to_best_anchor", {}).items() if v is not None}
            res.rows.append(cr)
        for name, b in s.get("best_anchor", {}).items():
            row = res.row(b["label"])
            if row is not None:
                res.best_anchor[name] = row
        res.bar_met = s["bar"]["met"] if s.get("bar") else None
        out.append(res)
    return out


# -- Markdown ---------------------------------------------------------------------------

def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_tables(results: list[ScenarioResult], reps: int) -> str:
    lines = []
    for res in results:
        sc = res.scenario
        lines.append(f"### `{sc.name}`: {sc.title}\n")
        lines.append(f"{sc.description}  ")
        lines.append("; ".join(f"{m.name} in {m.unit}, {direction(m)}" for m in sc.metrics)
                     + f"; median of {reps} runs [min–max]; ratio: against the best anchor (> 1: better).\n")
        head = "| implementation | kind |"
        sep = "|---|---|"
        for m in sc.metrics:
            head += f" {m.name} ({m.unit}) | [min–max] | ratio |"
            sep += "---:|---|---:|"
        lines.append(head)
        lines.append(sep)
        for r in res.rows:
            line = f"| {_md_escape(r.label)} | {r.kind} |"
            if r.status != OK:
                line += f" {r.status}: {_md_escape(r.note)} |" + " |" * (3 * len(sc.metrics) - 1)
            else:
                for m in sc.metrics:
                    f = r.figures.get(m.name)
                    if f is None:
                        line += " — | | |"
                        continue
                    rt = fmt_ratio(r.ratios.get(m.name)) if r.kind != ANCHOR else ""
                    line += f" {fmt(f.median, m.unit)} | {fmt_range(f, m.unit)} | {rt} |"
            lines.append(line)
        notes = [f"{r.label}: {r.note}" for r in res.rows if r.note and r.status == OK]
        if notes:
            lines.append("")
            lines.append("Notes: " + "; ".join(_md_escape(n) for n in notes) + ".")
        if sc.bar is not None:
            lines.append("")
            lines.append(f"Bar: {_md_escape(sc.bar.text)} — **{met_text(res.bar_met)}**.")
        lines.append("")
    return "\n".join(lines)


def markdown_summary(results: list[ScenarioResult]) -> str:
    lines = ["| scenario | unit | shmkit | best anchor | ratio | bar | met |",
             "|---|---|---:|---|---:|---|---|"]
    for r in summary_rows(results):
        anchor = (f"{_md_escape(r['best_anchor_label'])} {fmt(r['best_anchor'], r['unit'])}"
                  if r["best_anchor_label"] else "none measured")
        lines.append(f"| `{r['scenario']}` | {r['unit']} | {_md_escape(r['shmkit_text'])} | {anchor} | "
                     f"{fmt_ratio(r['ratio'])} | {_md_escape(r['bar'] or '—')} | "
                     f"{met_text(r['bar_met']) if r['bar'] else '—'} |")
    return "\n".join(lines) + "\n"
