"""The demo's report: `report.md` (plots beside it) and a self-contained `report.html` (plots embedded)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from miam_cli.attribution.report import markdown_summary
from miam_cli.store.atomic import atomic_write_text


def write_report(out: Path, runs: dict[str, Path], compare_md: str, attributions: list[dict], truth: dict,
                 timings: dict[str, float], maps: list[dict] | None = None) -> tuple[Path, Path]:
    out = Path(out)
    md = _markdown(out, runs, compare_md, attributions, truth, timings) + _maps_markdown(out, maps or [])
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", _html(md, out))
    return out / "report.md", out / "report.html"


def _markdown(out: Path, runs, compare_md, attributions, truth, timings) -> str:
    lines = ["# miam demo report", "",
             "Synthetic GeoPlant data with planted truth (`data/geoplant/truth.json`): the tabular modality dominates, "
             "Sentinel-2 carries an NDVI signal in red and NIR only, strongest at the patch centre, and the time series carry "
             f"an extreme event in {truth.get('event_year', '?')}.", "",
             "## Every subset of modalities (test split)", "", compare_md.strip(), ""]
    for name, run in runs.items():
        rel = Path(run).relative_to(out)
        lines += [f"### {name}: imbalance monitor", "", f"![imbalance {name}]({rel}/imbalance.png)", ""]
        table = pd.read_csv(Path(run) / "eval" / "subsets.csv")
        metric = "auc" if "auc" in table.columns else "top1"
        lines += ["| input | visible tokens | " + metric + " |", "| --- | --- | --- |"]
        lines += [f"| `{r.subset}` | {r.visible_tokens:.1f} | {getattr(r, metric):.4f} |" for r in table.itertuples()]
        lines.append("")
    lines += ["## Attribution (Shapley values, " + Path(runs[next(iter(runs))]).name + " run)", ""]
    for rep in attributions:
        rel = (Path(rep["dir"]) / f"{rep['stem']}.png").relative_to(out)
        lines.append(markdown_summary(rep["result"], rep["stem"], str(rel)))
        if rep["meta"].get("reused_eval_subsets"):
            lines += ["Subset values reused from `eval/subsets.csv`; only v(none) was evaluated.", ""]
        if rep["meta"].get("warning"):
            lines += [f"> Coverage warning: {rep['meta']['warning']}", ""]
    lines += ["## Timings", "", "| step | seconds |", "| --- | --- |"] + [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    return "\n".join(lines) + "\n"


def _maps_markdown(out: Path, maps: list[dict]) -> str:
    if not maps:
        return ""
    lines = ["", "## Maps (synthetic landscape, `miam map`)", "",
             "A second dataset (`data/landscape`): climate rasters and a Sentinel-2 mosaic that stops at 4.4° E; two species "
             "follow a vegetation field seen only through Sentinel-2's NDVI. Each pixel is predicted from the modalities valid "
             "there (coverage); the contribution map gives each modality's exact Shapley value per pixel.", ""]
    for m in maps:
        lines += [f"![{m['title']}]({Path(m['png']).relative_to(out)})", "", f"GeoTIFF: `{Path(m['tif']).relative_to(out)}`", ""]
    return "\n".join(lines)


def _html(md: str, base: Path) -> str:
    """A small Markdown subset (headings, tables, images, paragraphs) to HTML, images inlined as base64."""
    body, table = [], []

    def flush_table():
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|[\s\-|]+\|", r)]
            cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rest}</tbody></table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if m := re.match(r"(#+) (.*)", line):
            level = len(m.group(1))
            body.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := re.match(r"!\[(.*)\]\((.*)\)", line):
            body.append(_image(base / m.group(2), m.group(1)))
        elif line.startswith("> "):
            body.append(f"<blockquote>{_inline(line[2:])}</blockquote>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}img{max-width:100%}blockquote{color:#a50}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>miam demo report</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _image(path: Path, alt: str) -> str:
    if not path.exists():
        return f"<p>(missing plot {html.escape(str(path))})</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'></p>"
