"""HTML pieces and file readers of the run report (``report.py``).

Small functions that turn values into escaped HTML (a facts table, a data table, an
embedded PNG, a sentence for a missing piece) and read the run folder's JSON and CSV
files without raising: a missing or unreadable file becomes a sentence.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

TABLE_ROWS = 30
"""Rows shown per table (the CSV in the run folder has them all)."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ readers
def read_json(path: Path):
    """``(value, None)``, or ``(None, sentence)`` when the file is missing or unreadable."""
    if not path.is_file():
        return None, f"The run folder holds no {path.name}."
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path.name} could not be read ({err})."


def read_csv(path: Path, **options):
    """``(DataFrame, None)``, or ``(None, sentence)`` when the file is missing or unreadable."""
    if not path.is_file():
        return None, f"The run folder holds no {path.name}."
    try:
        return pd.read_csv(path, **options), None
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as err:
        return None, f"{path.name} could not be read ({err})."

# ------------------------------------------------------------------ HTML pieces
def escape(text) -> str:
    return html.escape(str(text), quote=True)


def missing_note(sentence: str) -> str:
    return f'<p class="missing">{escape(sentence)}</p>'


def bullet_list(items) -> str:
    return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>" if items else ""


def facts_table(rows) -> str:
    return '<table class="facts">' + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>"


def png_image(path: Path, alt: str) -> str:
    if not path.is_file():
        return missing_note(f"The run folder holds no {path.name}.")
    payload = path.read_bytes()
    if not payload.startswith(_PNG_SIGNATURE):
        return missing_note(f"{path.name} is not a PNG image.")
    return png_tag(payload, alt)


def png_tag(payload: bytes, alt: str) -> str:
    """PNG bytes as an embedded ``<img>`` (a data URI: the page stays self-contained)."""
    encoded = base64.b64encode(payload).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{escape(alt)}">'


def figure_image(draw, alt: str, failure: str) -> str:
    """The matplotlib figure ``draw()`` returns, as an embedded PNG; when the recorded data
    cannot be drawn, ``failure`` and the reason as one sentence instead."""
    import matplotlib.pyplot as plt

    try:
        figure = draw()
    except (KeyError, TypeError, ValueError) as err:
        return missing_note(f"{failure} ({err}).")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return png_tag(buffer.getvalue(), alt)


def html_table(frame: pd.DataFrame, note: str | None = None, max_rows: int = TABLE_ROWS) -> str:
    shown = frame.head(max_rows)
    head = "".join(f"<th>{escape(c)}</th>" for c in shown.columns)
    body = []
    for row in shown.itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, (float, np.floating)) or (isinstance(value, (int, np.integer)) and not isinstance(value, bool)):
                cells.append(f'<td class="num">{escape(num(float(value)))}</td>')
            else:
                cells.append(f"<td>{escape('–' if is_missing(value) else value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    out = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if len(frame) > max_rows:
        out += f'<p class="note">First {max_rows} of {len(frame)} rows{f"; {escape(note)} has them all" if note else ""}.</p>'
    return out


def num(value, spec: str = ".4g") -> str:
    if value is None or not np.isfinite(value):
        return "–"
    if spec == ".4g" and float(value).is_integer() and abs(value) < 1e6:
        return f"{int(value)}"
    return format(value, spec)


def as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def is_missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def label_list(labels, shown: int = 12) -> str:
    labels = [str(x) for x in labels]
    text = ", ".join(labels[:shown])
    return text + (f", … ({len(labels)} in all)" if len(labels) > shown else "")


# ------------------------------------------------------------------ dates
def now() -> str:
    """The current time, UTC, as the report writes dates."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def mtime(path: Path) -> str | None:
    """When ``path`` was last written (UTC), or ``None`` when it is not a file."""
    if not path.is_file():
        return None
    return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
