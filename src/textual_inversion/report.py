"""One self-contained HTML page for an evaluation: training images, grids, numbers, a bar chart."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image

from .atomic import write_text_atomic

METRICS = ("dino", "clip_i", "clip_t", "fidelity", "editability")
LABELS = {"dino": "DINO", "clip_i": "CLIP-I", "clip_t": "CLIP-T", "fidelity": "fidelity (judge)",
          "editability": "editability (judge)"}
COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1")


def thumbnail_data_uri(image: Image.Image, size: int = 128) -> str:
    image = image.copy()
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def bar_chart(rows: list[dict]) -> str:
    """An inline SVG: one group of bars per metric, one bar per row (concept or baseline)."""
    metrics = [m for m in METRICS if any(m in row for row in rows)]
    group_width, bar_width, height = 40 + 24 * len(rows), 22, 160
    width = 40 + group_width * len(metrics)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 60}" role="img">',
             f'<line x1="30" y1="{height}" x2="{width}" y2="{height}" stroke="#333"/>']
    for m_index, metric in enumerate(metrics):
        x0 = 40 + m_index * group_width
        parts.append(f'<text x="{x0}" y="{height + 18}" font-size="12">{html.escape(LABELS[metric])}</text>')
        for r_index, row in enumerate(rows):
            if metric not in row:
                continue
            value = max(0.0, min(1.0, float(row[metric])))
            bar_height = value * (height - 10)
            x = x0 + r_index * (bar_width + 2)
            parts.append(f'<rect x="{x}" y="{height - bar_height:.1f}" width="{bar_width}" height="{bar_height:.1f}" '
                         f'fill="{COLOURS[r_index % len(COLOURS)]}"><title>{html.escape(row["name"])}: '
                         f'{value:.3f}</title></rect>')
    for r_index, row in enumerate(rows):
        parts.append(f'<rect x="{40 + 150 * r_index}" y="{height + 32}" width="10" height="10" '
                     f'fill="{COLOURS[r_index % len(COLOURS)]}"/><text x="{54 + 150 * r_index}" y="{height + 42}" '
                     f'font-size="12">{html.escape(row["name"][:20])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_report(path: Path, rows: list[dict], training_images: list[Image.Image], grids: dict[str, list[Path]]) -> Path:
    """`rows`: {name, metric: value...} per concept and baseline; `grids`: name -> grid PNG paths."""
    metrics = [m for m in METRICS if any(m in row for row in rows)]
    table = ["<table><tr><th></th>" + "".join(f"<th>{LABELS[m]}</th>" for m in metrics) + "</tr>"]
    for row in rows:
        cells = "".join(f"<td>{row[m]:.3f}</td>" if m in row else "<td>-</td>" for m in metrics)
        table.append(f"<tr><th>{html.escape(row['name'])}</th>{cells}</tr>")
    table.append("</table>")
    thumbs = "".join(f'<img src="{thumbnail_data_uri(image)}" alt="training image">' for image in training_images)
    sections = []
    for name, paths in grids.items():
        images = "".join(f'<figure><img src="{html.escape(str(p.relative_to(path.parent)))}" width="256">'
                         f'<figcaption>{html.escape(p.stem.replace("-", " "))}</figcaption></figure>' for p in paths)
        sections.append(f"<h3>{html.escape(name)}</h3><div class='grids'>{images}</div>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Concept evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:right}}.grids{{display:flex;flex-wrap:wrap;gap:8px}}figure{{margin:0}}
figcaption{{font-size:11px;max-width:256px}}img{{image-rendering:pixelated;margin:2px}}</style></head><body>
<h1>Concept evaluation</h1><h2>Training images</h2><div>{thumbs}</div>
<h2>Numbers</h2>{''.join(table)}<h2>Comparison</h2>{bar_chart(rows)}<h2>Generated images</h2>{''.join(sections)}
</body></html>"""
    write_text_atomic(path, page)
    return path
