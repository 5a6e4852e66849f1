"""MkDocs hooks, so that the reference cannot drift from the code: in a page, the marker
`<!-- run-settings -->` becomes the table of every run setting (`gslbench.config.SETTINGS`) and
every method's knobs, built from their declarations, and `<!-- cli-commands -->` the list of
commands with their whole first sentence, as `gslbench --help` gives it (mkdocs-click's own list
cuts it at the docstring's first line break). The generated results pages hide the navigation
column, so that their tables fit at 1280 px, and their tables of contents stay short."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- run-settings -->"
CLI_MARKER = "<!-- cli-commands -->"


WIDE_PAGES = ("results.md", "finetune.md", "search.md")  # the results pages: wide tables
GENERATED_PAGES = (*WIDE_PAGES, "tuning.md")  # written by report --doc and tune --doc (search.md by hand)
MAX_ENTRIES = 8  # a section of a generated page with more subsections lists none of them


def on_page_markdown(markdown: str, page: Any = None, **kwargs: Any) -> str:
    if page is not None and page.file.src_uri in WIDE_PAGES:
        page.meta.setdefault("hide", ["navigation"])  # the tables get the left column's width
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, commands_list())
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, settings_table())


def on_page_content(html: str, page: Any = None, **kwargs: Any) -> str:
    """A generated page's table of contents leaves out the subsections of a section that has
    more than `MAX_ENTRIES` (tuning.md's hundred trial tables): the page keeps its headings."""
    if page is not None and page.file.src_uri in GENERATED_PAGES:
        _prune(page.toc.items)
    return html


def _prune(links: list) -> None:
    for link in links:
        if len(link.children) > MAX_ENTRIES:
            link.children = []
        _prune(link.children)


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
