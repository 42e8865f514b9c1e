"""A deterministic corpus of small real documents (HTML, Markdown, DOCX, PDF) for tests and benchmarks.

Every format here converts offline: PDFs carry a text layer (Helvetica), so Docling's native
pipeline reads them without model weights. `write_corpus(dir, 100)` writes 100 files of a few KB.

    .venv/bin/python bench/corpus.py DIR [COUNT]
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

WORDS = ("slurm node partition queue job array batch tensor dataset sample feature field provenance "
         "metadata store cluster login compute memory wall time account quota scratch project model "
         "weights layout table figure page document corpus markdown conversion worker actor pool").split()
FORMATS = ("html", "md", "docx", "pdf")


def _sentence(rng: random.Random, n: int = 12) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def _sections(rng: random.Random, size: int) -> list[tuple[str, list[str], list[list[str]]]]:
    """(heading, paragraphs, table rows) per section; `size` scales the amount of text."""
    out = []
    for s in range(1 + size):
        paragraphs = [" ".join(_sentence(rng) for _ in range(4)) for _ in range(3)]
        table = [["name", "nodes", "hours"]] + [[rng.choice(WORDS), str(rng.randint(1, 64)), str(rng.randint(1, 48))] for _ in range(3)]
        out.append((f"Section {s + 1}: {rng.choice(WORDS)} {rng.choice(WORDS)}", paragraphs, table))
    return out


def html(title: str, sections) -> bytes:
    body = [f"<h1>{title}</h1>"]
    for heading, paragraphs, table in sections:
        body.append(f"<h2>{heading}</h2>")
        body += [f"<p>{p}</p>" for p in paragraphs]
        rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in table)
        body.append(f"<table>{rows}</table>")
    return f"<!DOCTYPE html><html><head><title>{title}</title></head><body>{''.join(body)}</body></html>".encode()


def markdown(title: str, sections) -> bytes:
    lines = [f"# {title}", ""]
    for heading, paragraphs, table in sections:
        lines += [f"## {heading}", ""]
        for p in paragraphs:
            lines += [p, ""]
        lines.append("| " + " | ".join(table[0]) + " |")
        lines.append("|" + "---|" * len(table[0]))
        lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
        lines.append("")
    return "\n".join(lines).encode()


def docx(title: str, sections) -> bytes:
    import io

    from docx import Document

    document = Document()
    document.add_heading(title, level=1)
    for heading, paragraphs, table in sections:
        document.add_heading(heading, level=2)
        for p in paragraphs:
            document.add_paragraph(p)
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pdf(title: str, sections) -> bytes:
    """A text PDF, one page per section, written by hand (no PDF library needed)."""
    pages = []
    for heading, paragraphs, _ in sections:
        lines = [title, heading] + [p[i:i + 90] for p in paragraphs for i in range(0, len(p), 90)]
        ops = ["BT", "/F1 11 Tf", "14 TL", "50 800 Td"]
        for line in lines[:52]:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        pages.append("\n".join(ops).encode())
    objects: list[bytes] = []
    n = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, content in enumerate(pages):
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
                       f"/Contents {5 + 2 * i} 0 R >>".encode())
        objects.append(f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


WRITERS = {"html": html, "md": markdown, "docx": docx, "pdf": pdf}


def write_document(path: Path, fmt: str, seed: int, size: int = 1) -> Path:
    rng = random.Random(seed)
    title = f"Report {seed}: {rng.choice(WORDS)} {rng.choice(WORDS)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(WRITERS[fmt](title, _sections(rng, size)))
    return path


def write_pdf_with_unreadable_page(path: Path, seed: int = 1) -> Path:
    """A 3-page PDF whose page 2 has an empty MediaBox: Docling converts pages 1 and 3 and reports
    a partial success naming page 2 (a real parse failure, not a simulated one)."""
    write_document(path, "pdf", seed, 2)
    data = path.read_bytes()
    box = b"/MediaBox [0 0 595 842]"
    second = data.index(box, data.index(box) + 1)
    path.write_bytes(data[:second] + b"/MediaBox [0 0 0 0]    " + data[second + len(box):])  # same length: offsets hold
    return path


def write_corpus(directory: Path, count: int, *, seed: int = 0, formats=FORMATS, large_every: int = 10) -> list[Path]:
    """`count` documents cycling through `formats`; every `large_every`-th is about five times longer."""
    paths = []
    for i in range(count):
        fmt = formats[i % len(formats)]
        size = 5 if large_every and i % large_every == large_every - 1 else 1
        paths.append(write_document(Path(directory) / f"doc-{i:04d}.{fmt}", fmt, seed * 100_000 + i, size))
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1])
    written = write_corpus(target, int(sys.argv[2]) if len(sys.argv) > 2 else 12)
    print(f"wrote {len(written)} documents to {target}")
