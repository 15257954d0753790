"""The demo's report: `report.md` (plots beside it) and a self-contained `report.html` (plots embedded)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from miam_cli.attribution.report import markdown_summary
from miam_cli.runs.rundir import RunDir
from miam_cli.store.atomic import atomic_write_text


def write_report(out: Path, runs: dict[str, Path], compare_md: str, attributions: list, truth: dict,
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
        table = pd.read_csv(RunDir(run).subsets_table)
        metric = "auc" if "auc" in table.columns else "top1"
        lines += ["| input | visible tokens | " + metric + " |", "| --- | --- | --- |"]
        lines += [f"| `{r.subset}` | {r.visible_tokens:.1f} | {getattr(r, metric):.4f} |" for r in table.itertuples()]
        lines.append("")
    lines += ["## Attribution (Shapley values, " + Path(runs[next(iter(runs))]).name + " run)", ""]
    for rep in attributions:
        rel = (rep.path.parent / rep.figure).relative_to(out)
        lines.append(markdown_summary(rep.result, rep.title, str(rel)))
        if rep.meta.get("reused_eval_subsets"):
            lines += ["Subset values reused from `eval/subsets.csv`; only v(none) was evaluated.", ""]
        if rep.meta.get("warning"):
            lines += [f"> Coverage warning: {rep.meta['warning']}", ""]
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


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.45; color: #222;
       max-width: 64em; margin: 2em auto; padding: 0 1.2em; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
.table-wrap { max-width: 100%; overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f4f4f4; }
img { max-width: 100%; height: auto; }
blockquote { color: #8a4b00; border-left: 3px solid #e0a040; margin: 1em 0; padding: .1em 1em; }
code { background: #f4f4f4; padding: 0 .2em; border-radius: 3px; }
"""
EMBEDDED = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _html(md: str, base: Path) -> str:
    """report.md rendered by markdown-it-py (CommonMark + tables), figures embedded so the file stands
    alone; tables sit in a box that scrolls sideways, so a wide compare table never widens the page."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark").enable("table")
    tokens = parser.parse(md)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                _embed(child, base)
    parser.renderer.rules["table_open"] = lambda *_: '<div class="table-wrap"><table>\n'
    parser.renderer.rules["table_close"] = lambda *_: "</table></div>\n"
    body = parser.renderer.render(tokens, parser.options, {})
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>miam demo report</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n")


def _embed(image, base: Path) -> None:
    """A figure becomes a data: URL (PNG, SVG), or a link when a browser cannot show it inline (PDF)."""
    path = base / image.attrGet("src")
    kind = EMBEDDED.get(path.suffix.lower())
    if not path.exists():
        image.type, image.content = "html_inline", f"<em>(missing figure {html.escape(str(path))})</em>"
        return
    if kind is None:
        rel = html.escape(str(path.relative_to(base)))
        image.type, image.content = "html_inline", f"<a href='{rel}'>figure: {rel}</a>"
        return
    image.attrSet("src", f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}")
