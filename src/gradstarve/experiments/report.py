"""The reproduction report: ``report.md`` and a self-contained ``report.html`` from a list of reproductions.

Input: :class:`~gradstarve.experiments.reproduce.base.Reproduction` s (each with its tables, figures, notes and
wall time) and the parts that were skipped (:class:`Skipped`: data missing, recipe not available yet, or failed).
Output, in ``out_dir``:

* ``report.md``: a summary table (part, status, time), then per reproduction its notes, its tables (our numbers with
  the paper's in adjacent columns and the differences in units of the paper's std, as the recipe made them) and its
  figures as relative links, then the skipped parts with the reason, then the software versions;
* ``report.html``: the same content with every PNG figure embedded as a base64 data URI and the style inline, so
  the one file can be mailed or archived and opens with no network and no other file.

Software versions: Python, platform, torch, numpy, scipy, pandas, matplotlib, gradstarve and (when the package
runs from a git checkout) the commit, marked ``(modified)`` when the tree has uncommitted changes.
"""

from __future__ import annotations

import base64
import datetime
import html
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from gradstarve.experiments.reproduce.base import Reproduction
from gradstarve.experiments.tables import html_table, markdown_table

REPORT_TITLE = "Gradient Starvation (Pezeshki et al., NeurIPS 2021): reproduction report"
_SUMMARY_COLUMNS = ["part", "reproduces", "status", "time"]
_PACKAGES = ("torch", "numpy", "scipy", "pandas", "matplotlib", "gradstarve", "ray")


@dataclass(frozen=True)
class Skipped:
    """A part of the report that did not run: ``kind`` is ``"data missing"``, ``"not available"`` (its recipe is
    not in this version) or ``"failed"`` (it raised; ``reason`` holds the error)."""

    name: str
    title: str
    kind: str
    reason: str
    seconds: float = 0.0


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the git checkout holding ``path`` (default: this package), with ``(modified)`` if the work
    tree has uncommitted changes; ``None`` outside a checkout or without git."""
    folder = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit} (modified)" if status else commit


def software_versions() -> dict[str, str]:
    """Name -> version of the interpreter, the platform, the scientific stack, gradstarve and its git commit."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            if package != "ray":  # optional
                versions[package] = "not installed"
    commit = git_commit()
    if commit is not None:
        versions["git commit"] = commit
    return versions


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def _summary_rows(reproductions: Sequence[Reproduction], skipped: Sequence[Skipped]) -> list[tuple[str, str, str, str]]:
    rows = [(r.name, r.title, r.evidence or "ran", _seconds(r.seconds)) for r in reproductions]
    rows += [(s.name, s.title, f"skipped ({s.kind})", _seconds(s.seconds)) for s in skipped]
    return rows


def render_markdown(
    out_dir: Path,
    reproductions: Sequence[Reproduction],
    skipped: Sequence[Skipped] = (),
    *,
    versions: dict[str, str],
    title: str = REPORT_TITLE,
    command: str | None = None,
    seconds: float | None = None,
) -> str:
    """The text of ``report.md`` (figure links relative to ``out_dir``)."""
    import pandas as pd

    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [f"# {title}", ""]
    made = f"Generated {when}" + (f" by `{command}`" if command else "")
    made += f" in {_seconds(seconds)}" if seconds else ""
    lines += [made + ".", "", "## Summary", ""]
    summary = pd.DataFrame(_summary_rows(reproductions, skipped), columns=_SUMMARY_COLUMNS)
    lines += [markdown_table(summary)]
    for reproduction in reproductions:
        lines += [f"## {reproduction.title}", "", f"`{reproduction.name}`, {_seconds(reproduction.seconds)}.", ""]
        lines += [f"- {note}" for note in reproduction.notes] + ([""] if reproduction.notes else [])
        for name, table in reproduction.tables.items():
            lines += [f"### {name}", "", markdown_table(table)]
        for figure in reproduction.figures:
            lines += [f"![{Path(figure).stem}]({_relative(figure, out_dir)})", ""]
    if skipped:
        lines += ["## Skipped", ""]
        lines += [f"- **{s.name}** ({s.title}): {s.kind}. {s.reason}" for s in skipped] + [""]
    lines += ["## Software", ""]
    lines += [markdown_table(pd.DataFrame(list(versions.items()), columns=["software", "version"]))]
    return "\n".join(lines)


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0 1.4em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.skipped { color: #8a5a00; } .failed { color: #b00020; } .ok { color: #1b7a1b; }
code { background: #f4f4f4; padding: 0 0.25em; }
"""


def _embedded_image(path: Path) -> str:
    path = Path(path)
    if path.suffix.lower() != ".png" or not path.exists():
        return f"<p>figure <code>{html.escape(str(path))}</code> (not embedded: not a PNG file on disk)</p>\n"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"></figure>\n'


def render_html(
    reproductions: Sequence[Reproduction],
    skipped: Sequence[Skipped] = (),
    *,
    versions: dict[str, str],
    title: str = REPORT_TITLE,
    command: str | None = None,
    seconds: float | None = None,
) -> str:
    """The text of ``report.html``: one file, figures embedded, no external resource."""
    import pandas as pd

    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    made = f"Generated {when}" + (f" by <code>{html.escape(command)}</code>" if command else "")
    made += f" in {_seconds(seconds)}" if seconds else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{made}.</p>",
        "<h2>Summary</h2>",
        html_table(pd.DataFrame(_summary_rows(reproductions, skipped), columns=_SUMMARY_COLUMNS)),
    ]
    for reproduction in reproductions:
        parts.append(f'<h2 id="{html.escape(reproduction.name)}">{html.escape(reproduction.title)}</h2>')
        parts.append(f"<p><code>{html.escape(reproduction.name)}</code>, {_seconds(reproduction.seconds)}.</p>")
        if reproduction.notes:
            parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in reproduction.notes) + "</ul>")
        for name, table in reproduction.tables.items():
            parts += [f"<h3>{html.escape(name)}</h3>", html_table(table)]
        parts += [_embedded_image(figure) for figure in reproduction.figures]
    if skipped:
        parts.append("<h2>Skipped</h2><ul>")
        for s in skipped:
            css = "failed" if s.kind == "failed" else "skipped"
            parts.append(
                f'<li class="{css}"><b>{html.escape(s.name)}</b> ({html.escape(s.title)}): {html.escape(s.kind)}. '
                f"{html.escape(s.reason)}</li>"
            )
        parts.append("</ul>")
    parts += [
        "<h2>Software</h2>",
        html_table(pd.DataFrame(list(versions.items()), columns=["software", "version"])),
        "</body></html>",
        "",
    ]
    return "\n".join(parts)


def write_report(
    out_dir: Path | str,
    reproductions: Sequence[Reproduction],
    skipped: Sequence[Skipped] = (),
    *,
    title: str = REPORT_TITLE,
    command: str | None = None,
    seconds: float | None = None,
) -> list[Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    versions = software_versions()
    common = {"versions": versions, "title": title, "command": command, "seconds": seconds}
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(render_markdown(out_dir, reproductions, skipped, **common))
    html_path.write_text(render_html(reproductions, skipped, **common))
    return [md_path, html_path]
