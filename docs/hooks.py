"""MkDocs hooks, so that the reference cannot drift from the code: in a page, the marker
`<!-- run-settings -->` becomes the table of every run setting (`gslbench.config.SETTINGS`) and
every method's knobs, built from their declarations, and `<!-- cli-commands -->` the list of
commands with their whole first sentence, as `gslbench --help` gives it (mkdocs-click's own list
cuts it at the docstring's first line break)."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- run-settings -->"
CLI_MARKER = "<!-- cli-commands -->"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, commands_list())
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, settings_table())


def commands_list() -> str:
    """A bullet per command, in `gslbench --help`'s order, linked to its section."""
    import click

    from gslbench.cli import cli

    context = click.Context(cli, info_name="gslbench")
    return "\n".join(f"- [`{name}`](#gslbench-{name}): "
                     f"{cli.commands[name].get_short_help_str(limit=10_000)}"
                     for name in cli.list_commands(context) if not cli.commands[name].hidden)


def settings_table() -> str:
    """The table of every run setting and method knob: option and grid key, whose, default,
    allowed values, meaning."""
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
    return "\n".join(rows)
