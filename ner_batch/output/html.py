"""A self-contained HTML page of tagged documents: entities highlighted by type, a legend that
filters by type, the score on hover, and counts. No network, no CDN: CSS and a few lines of
JavaScript are inline. Large files are paged (``per_page`` documents a page) and a very long
document is cut (``max_chars``), each with a line that says so.
"""

from __future__ import annotations

import collections
import gzip
import html
import json
import re
from pathlib import Path
from typing import Any, Iterable

PALETTE = ["#ffd166", "#06d6a0", "#9ad1ff", "#f4a7b9", "#c3b1e1", "#ffb570", "#b5e48c", "#f7c6a3", "#a0e7e5",
           "#ffe5a5", "#d4a5a5", "#cdeac0", "#e2c2ff", "#bde0fe"]
_SOURCE_LINE = re.compile(r"^(.*):(\d+)$")


def recover_text(rec: dict[str, Any]) -> str | None:
    """The document text the record's offsets refer to: the record's own ``text`` (pre-tokenized
    input), else the source it was read from (a text file, or a line of a JSONL file), provided
    every entity's text is found at its offsets; else None."""
    text = rec.get("text") if isinstance(rec.get("text"), str) else None
    if text is None:
        src = str(rec.get("source", rec.get("id", "")))
        try:
            m = _SOURCE_LINE.match(src)
            if m and Path(m.group(1)).is_file():
                opener = gzip.open if m.group(1).endswith(".gz") else open
                with opener(m.group(1), "rt", encoding="utf-8-sig") as f:
                    for k, line in enumerate(f, start=1):
                        if k == int(m.group(2)):
                            obj = json.loads(line)
                            text = obj.get("text") if isinstance(obj, dict) else None
                            break
            elif src and Path(src).is_file():
                raw = Path(src).read_bytes()
                text = (gzip.decompress(raw) if src.endswith(".gz") else raw).decode("utf-8-sig")
        except (OSError, ValueError, EOFError, UnicodeDecodeError, RecursionError):
            text = None
    if not isinstance(text, str):
        return None
    for e in rec.get("entities", []):
        if text[e.get("start", 0) : e.get("end", 0)] != e.get("text"):
            return None
    return text


def _cls(label: str) -> str:
    """A label as a CSS class name (labels come from the file: nothing else gets through)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(label))


def _highlight(text: str, entities: list[dict[str, Any]], max_chars: int) -> tuple[str, int]:
    """HTML of ``text[:max_chars]`` with each entity in one ``<mark>``; entities past the cut."""
    parts, pos, beyond = [], 0, 0
    for e in sorted(entities, key=lambda e: e["start"]):
        if e["end"] > max_chars:
            beyond += 1
            continue
        if e["start"] < pos:
            continue  # never happens with BIO spans; kept safe
        parts.append(html.escape(text[pos : e["start"]]))
        score = e.get("score")
        tip = f"{e['label']} {score:.3f}" if isinstance(score, (int, float)) else e["label"]
        parts.append(f'<mark class="t-{_cls(e["label"])}" title="{html.escape(tip, quote=True)}">'
                     f'{html.escape(text[e["start"]:e["end"]])}</mark>')
        pos = e["end"]
    parts.append(html.escape(text[pos:max_chars]))
    return "".join(parts), beyond


def render(records: Iterable[dict[str, Any]], *, title: str = "ner-batch", page: int = 1, per_page: int = 200,
           max_chars: int = 100_000) -> tuple[str, dict[str, Any]]:
    """The page, and what it holds (documents in the file and on this page, entities by type)."""
    first, last = (page - 1) * per_page, page * per_page
    body, counts, n_docs, n_errors = [], collections.Counter(), 0, 0
    for k, rec in enumerate(records):
        n_docs += 1
        entities = [e for e in rec.get("entities", []) if isinstance(e, dict) and {"start", "end", "label", "text"} <= set(e)]
        counts.update(e["label"] for e in entities)
        n_errors += bool(rec.get("error"))
        if not first <= k < last:
            continue
        head = f'<h2>{html.escape(str(rec.get("id", "")))}</h2>'
        if rec.get("error"):
            body.append(f'<section class="doc">{head}<p class="error">error: {html.escape(str(rec["error"]))}</p></section>')
            continue
        text = recover_text(rec)
        if text is None:
            items = "".join(f'<li><mark class="t-{_cls(e["label"])}">'
                            f'{html.escape(e["text"])}</mark> {e["start"]}-{e["end"]}</li>' for e in entities)
            body.append(f'<section class="doc">{head}<p class="note">original text not found next to the record; '
                        f'entities only:</p><ul>{items}</ul></section>')
            continue
        shown, beyond = _highlight(text, entities, max_chars)
        cut = (f'<p class="note">text cut at {max_chars:,} of {len(text):,} characters; {beyond} entities after the cut '
               'are not shown</p>') if len(text) > max_chars else ""
        body.append(f'<section class="doc">{head}<div class="text">{shown}</div>{cut}</section>')
    labels = sorted(counts)
    colors = {_cls(lab): PALETTE[i % len(PALETTE)] for i, lab in enumerate(labels)}
    css = "\n".join(f"mark.t-{c} {{ background: {col}; }} body.hide-{c} mark.t-{c} {{ background: none; }}"
                    for c, col in colors.items())
    legend = "".join(f'<label><input type="checkbox" checked data-label="{_cls(lab)}"> <mark class="t-{_cls(lab)}">'
                     f'{html.escape(lab)}</mark> {counts[lab]:,}</label> ' for lab in labels)
    pages = max(1, -(-n_docs // per_page))
    shown_to = min(last, n_docs)
    summary = (f"{n_docs:,} documents ({n_errors:,} unreadable), {sum(counts.values()):,} entities. "
               f"This page: documents {first + 1 if n_docs else 0:,}-{shown_to:,} (page {page} of {pages}"
               + (f"; run `ner-batch show FILE --html OUT --page N` for the others" if pages > 1 else "") + ").")
    page_html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
h1 {{ font-size: 1.3em; }} h2 {{ font-size: 1em; margin: 1.5em 0 .3em; color: #555; word-break: break-all; }}
.legend {{ position: sticky; top: 0; background: #fff; padding: .5em 0; border-bottom: 1px solid #ddd; }}
.legend label {{ margin-right: 1em; white-space: nowrap; }}
.text {{ white-space: pre-wrap; }} mark {{ border-radius: 3px; padding: 0 2px; }}
.error {{ color: #b00; }} .note {{ color: #777; font-style: italic; }}
{css}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(summary)}</p>
<div class="legend">{legend}</div>
{"".join(body)}
<script>
document.querySelectorAll('.legend input').forEach(function (box) {{
  box.addEventListener('change', function () {{ document.body.classList.toggle('hide-' + box.dataset.label, !box.checked); }});
}});
</script>
</body></html>
"""
    return page_html, {"documents": n_docs, "page": page, "pages": pages, "shown": max(0, shown_to - first),
                       "entities": dict(counts)}
