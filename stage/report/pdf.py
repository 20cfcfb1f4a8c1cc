"""A small document model on reportlab's Platypus: headings, paragraphs, number tables and figures, written
atomically to a PDF. No LaTeX needed."""

from __future__ import annotations

import os
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Image, PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

_STYLES = getSampleStyleSheet()
_TABLE_STYLE = TableStyle([
    ("FONT", (0, 0), (-1, -1), "Helvetica", 7.5),
    ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 7.5),
    ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.9, 0.9, 0.93)),
    ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
    ("ALIGN", (1, 1), (-1, -1), "RIGHT"),
])
PAGE_WIDTH = A4[0] - 3.6 * cm


def fmt(value, digits: int = 3) -> str:
    """Numbers for tables: fixed significant digits; None/NaN as an em dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, float):
        if value != value:
            return "\u2014"
        if value == float("inf"):
            return "inf"
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"
    return str(value)


class Report:
    def __init__(self, title: str):
        self.flow = [Paragraph(escape(title), _STYLES["Title"])]

    def heading(self, text: str, level: int = 1):
        self.flow.append(Paragraph(escape(text), _STYLES[f"Heading{level + 1}"]))

    def paragraph(self, text: str, small: bool = False):
        """Plain text; paragraphs separated by blank lines; `code` spans are set in a fixed font."""
        style = _STYLES["BodyText"] if not small else _STYLES["Code"]
        for block in text.strip().split("\n\n"):
            parts = escape(" ".join(block.split())).split("`")
            html = "".join(f'<font face="Courier">{p}</font>' if i % 2 else p for i, p in enumerate(parts))
            self.flow.append(Paragraph(html, style))

    def bullets(self, items: list[str]):
        for item in items:
            self.paragraph("\u2022 " + item)

    def table(self, header: list[str], rows: list[list], col_widths: list[float] | None = None, note: str = ""):
        cell = _STYLES["BodyText"].clone("cell", fontSize=7.5, leading=9)
        data = [[Paragraph(escape(str(h)), cell) for h in header]]
        data += [[Paragraph(escape(fmt(v)), cell) for v in row] for row in rows]
        widths = col_widths or [PAGE_WIDTH / len(header)] * len(header)
        t = Table(data, colWidths=widths, repeatRows=1)
        t.setStyle(_TABLE_STYLE)
        self.flow += [t, Spacer(1, 0.2 * cm)]
        if note:
            self.paragraph(note)

    def box(self, title: str, lines: list[str], warning: bool = False):
        """A framed panel, tinted when it warns: for what a reader must not miss."""
        tint = colors.Color(1.0, 0.9, 0.85) if warning else colors.Color(0.9, 0.96, 0.9)
        edge = colors.Color(0.75, 0.2, 0.1) if warning else colors.Color(0.3, 0.55, 0.3)
        body = _STYLES["BodyText"]
        cells = [[Paragraph(f"<b>{escape(title)}</b>", body)]] + [[Paragraph(escape("\u2022 " + s), body)]
                                                                   for s in lines]
        t = Table(cells, colWidths=[PAGE_WIDTH])
        t.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), tint), ("BOX", (0, 0), (-1, -1), 1.2, edge),
                               ("LEFTPADDING", (0, 0), (-1, -1), 8), ("RIGHTPADDING", (0, 0), (-1, -1), 8)]))
        self.flow += [t, Spacer(1, 0.3 * cm)]

    def figure(self, png: str | Path, caption: str = "", width: float = PAGE_WIDTH, max_height: float = 12 * cm):
        from PIL import Image as PILImage

        with PILImage.open(png) as im:
            w, h = im.size
        height = width * h / w
        if height > max_height:  # a tall or single-panel figure would otherwise take the whole page
            width, height = width * max_height / height, max_height
        self.flow.append(Image(str(png), width=width, height=height))
        if caption:
            self.flow.append(Paragraph(f"<i>{escape(caption)}</i>", _STYLES["BodyText"]))
        self.flow.append(Spacer(1, 0.3 * cm))

    def page_break(self):
        self.flow.append(PageBreak())

    def write(self, out: str | Path) -> Path:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        doc = SimpleDocTemplate(str(tmp), pagesize=A4, leftMargin=1.8 * cm, rightMargin=1.8 * cm,
                                topMargin=1.6 * cm, bottomMargin=1.6 * cm, title=self.flow[0].text)
        doc.build(self.flow)
        os.replace(tmp, out)
        return out
