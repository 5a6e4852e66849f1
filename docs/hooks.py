"""MkDocs hook: the marker `<!-- run-settings -->` in a page becomes the table of every run
setting (`gslbench.config.SETTINGS`) and every method's knobs, built from their declarations, so
the reference cannot drift from the code."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- run-settings -->"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from gslbench.config import SETTINGS
    from gslbench.methods import METHODS

    rows = ["| option, grid key | for | default | allowed | meaning |", "|---|---|---|---|---|"]
    owned = [("every run", setting) for setting in SETTINGS]
    owned += [(f"`{name}`", knob) for name, method in METHODS.items() for knob in method.knobs]
    for owner, setting in owned:
        allowed = (", ".join(map(str, setting.choices)) if setting.choices
                   else "" if setting.kind is str else setting.range_text())
        help_text = " ".join(setting.help.split()).replace("|", "\\|")
        rows.append(f"| `{setting.option}`<br>`{setting.name}` | {owner} | `{setting.default}` "
                    f"| {allowed or setting.kind.__name__} | {help_text} |")
    return markdown.replace(MARKER, "\n".join(rows))
