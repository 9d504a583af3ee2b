"""Request texts to model sentences and back.

A text may hold several lines; each non-blank line is one sentence for the model. Blank lines and
the whitespace around each line are kept as they were, so ``"  Hello.\\n\\nBye. "`` comes back as
``"  Bonjour.\\n\\nAu revoir. "``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Line:
    """One line of a text: `core` is what the model translates ("" for a blank line)."""

    lead: str
    core: str
    trail: str


def split_text(text: str) -> list[Line]:
    """A text's lines ("\\n" separated; a "\\r" before it counts as trailing whitespace)."""
    lines = []
    for raw in text.split("\n"):
        core = raw.strip()
        if not core:
            lines.append(Line(raw, "", ""))
            continue
        start = raw.index(core)
        lines.append(Line(raw[:start], core, raw[start + len(core):]))
    return lines


def join_text(lines: list[Line], outputs: list[str]) -> str:
    """The text again with each non-blank line replaced by its output (outputs: one per line)."""
    return "\n".join(line.lead + out + line.trail if line.core else line.lead for line, out in zip(lines, outputs))
