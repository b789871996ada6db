"""MkDocs hook: the CLI reference page, generated at build time from ptflow's own parsers.

`ptflow.cli.build_parser()` makes every command's flags from the declarations they come from
(TrainConfig's fields, the server's Settings, each command module's own options), so this page
reads the parsers and nothing else: a flag added, renamed or regrouped there shows here at the
next build, and no flag table is kept by hand anywhere. Groups are the parsers' argument groups.
A group that a later command shares with an earlier one (sweep takes every train option) lists
its flags and links to where they are described, rather than printing the same rows twice.
"""

from __future__ import annotations

import argparse
import functools
import re

PAGE = "reference/cli.md"
SKIPPED = (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)
TRAILING_DEFAULT = re.compile(r"\s*\(default: (.*)\)\s*$", re.S)


def on_files(files, config):
    """Add the generated page to the site before the navigation is built (mkdocs.yml lists it)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files


def render() -> str:
    from ptflow.cli import build_parser

    commands = list(walk(build_parser(), ()))
    lines = ["# CLI reference", "",
             "Generated from ptflow's argument parsers when this site is built: `ptflow COMMAND --help` prints the "
             "same flags. Every flag is also accepted with hyphens (`--model-fn` for `--model_fn`), and "
             "`python -m ptflow` is the same program as `ptflow`.", "",
             "| command | what it does |", "| --- | --- |"]
    lines += [f"| [`ptflow {' '.join(path)}`](#{slug(path)}) | {text(help or '')} |" for path, _, help in commands]
    seen: dict = {}  # (group title, its flags) -> (anchor, command) of the table that describes them
    for path, parser, help in commands:
        lines += ["", *command_section(path, parser, help, seen)]
    return "\n".join(lines) + "\n"


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
    """(command path, its parser, its help line) for every sub-command, depth first, in declared order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name)
                yield from walk(sub, (*path, name))


def command_section(path, parser: argparse.ArgumentParser, help: str | None, seen: dict) -> list[str]:
    lines = [f"## ptflow {' '.join(path)} {{#{slug(path)}}}", ""]
    if parser.description or help:
        lines += [text(parser.description or help), ""]
    lines += [f"```\n{usage(path, parser)}\n```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, SKIPPED)]
        if not actions:
            continue
        anchor = f"{slug(path)}-{slug([group.title])}"
        rows = [row(a) for a in actions]
        key = (group.title, tuple(rows))
        lines += [f"### {text(group.title)} {{#{anchor}}}", ""]
        if key in seen:
            flags = ", ".join(f"`{flag(a)}`" for a in actions)
            lines += [f"As in [{seen[key][1]}](#{seen[key][0]}): {flags}.", ""]
            continue
        seen[key] = (anchor, f"ptflow {' '.join(path)}")
        kind = "flag" if any(a.option_strings for a in actions) else "argument"
        lines += [f"| {kind} | default | what |", "| --- | --- | --- |", *rows, ""]
    return lines


def usage(path, parser: argparse.ArgumentParser) -> str:
    """The command's shape: its options, then its positional arguments or sub-commands."""
    words = ["ptflow", *path, "[options]"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            words.append(f"[{{{','.join(action.choices)}}} ...]")
        elif not action.option_strings:
            words.append(signature(action))
    return " ".join(words)


def row(action: argparse.Action) -> str:
    help, default = explained(action)
    shown = f"`{default}`" if default else ""
    return f"| `{signature(action)}` | {shown} | {text(help)} |"


def explained(action: argparse.Action) -> tuple[str, str]:
    """(help, default): the help argparse would print, with its trailing "(default: ...)" moved out,
    else the action's own default when it says something."""
    help = argparse.HelpFormatter("ptflow")._expand_help(action) if action.help else ""
    found = TRAILING_DEFAULT.search(help)
    if found:
        return help[:found.start()], found.group(1)
    if action.required and action.option_strings:
        return help + " (required)", ""
    default = action.default
    if default is argparse.SUPPRESS and action.nargs != 0:
        default = declared_defaults().get(action.dest)  # train options are left out of the namespace when not given
    if default is None or default is False or default is argparse.SUPPRESS or default in ("", [], {}):
        return help, ""
    return help, ",".join(map(str, default)) if isinstance(default, list) else str(default)


@functools.cache
def declared_defaults() -> dict:
    """TrainConfig's defaults, by field name: what a train option left out of the command line gets."""
    import dataclasses

    from ptflow import TrainConfig

    return {field.name: getattr(TrainConfig(), field.name) for field in dataclasses.fields(TrainConfig)}


def flag(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.metavar or action.dest


def signature(action: argparse.Action) -> str:
    """`-o, --out PNG`, `--optimizer {adam,adamw,sgd}`, `--print_config [yaml|toml]`, `RUN ...`."""
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    value = action.metavar or ("{" + ",".join(map(str, action.choices)) + "}" if action.choices else
                               action.dest.upper())
    value = {"?": f"[{value}]", "+": f"{value} ...", "*": f"[{value} ...]"}.get(action.nargs, value)
    return f"{', '.join(action.option_strings)} {value}".strip()


def text(value: str) -> str:
    """Help text as Markdown: code spans kept, everything else literal (no emphasis from `*`, no
    table cell ended by `|`, no HTML from `<`)."""
    parts = value.split("`")
    for i in range(0, len(parts), 2):  # outside the code spans
        parts[i] = re.sub(r"([\\*_\[\]|>#])", r"\\\1", parts[i]).replace("<", "&lt;").replace("\n", " ")
    return "`".join(parts) if len(parts) % 2 else "\\`".join(parts)


def slug(words) -> str:
    return "-".join(re.sub(r"[^a-z0-9]+", "-", word.lower()).strip("-") for word in words)
