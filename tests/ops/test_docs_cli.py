"""The CLI the docs show is the CLI there is: every ``ragstore COMMAND --option`` written in
README.md, TROUBLESHOOTING.md and docs/ names a command and options that exist, and every
option of every command is named somewhere in them.

No database and no model: the command tree is read from click, so both checks take well
under a second. docs/benchmarks.md is a log of measurements, not a manual, and is left out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ragstore.cli.app import build_command

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    ROOT / "README.md",
    ROOT / "TROUBLESHOOTING.md",
    *sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "benchmarks.md"),
]
# `ragstore` and what follows it on the line, up to what ends a command in prose or shell
_COMMAND = re.compile(r"\bragstore((?: +[^`|;&#\n)\"']+)+)")


def _options(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    if hasattr(command, "commands"):
        return [
            leaf
            for name, sub in command.commands.items()
            if not getattr(sub, "hidden", False)
            for leaf in _leaves(sub, (*path, name))
        ]
    return [(" ".join(path), command)]


def test_every_documented_command_and_option_exists() -> None:
    root = build_command()
    wrong: list[str] = []
    seen = 0
    for page in PAGES:
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for match in _COMMAND.finditer(line):
                words = match.group(1).split()
                command, path = root, []
                while words and hasattr(command, "commands") and words[0] in command.commands:
                    path.append(words[0])
                    command = command.commands[words.pop(0)]
                if not path:  # prose ("ragstore keeps ..."), not a command
                    continue
                seen += 1
                where = f"{page.relative_to(ROOT)}:{n}: ragstore {' '.join(path)}"
                if hasattr(command, "commands"):
                    if words and re.fullmatch(r"[a-z][a-z-]*", words[0]):
                        wrong.append(f"{where}: no subcommand {words[0]!r}")
                    continue
                known = _options(command)
                for word in words:
                    if re.fullmatch(r"--?[A-Za-z][A-Za-z0-9-]*(=.*)?", word):
                        option = word.split("=")[0]
                        if option not in known:
                            wrong.append(f"{where}: no option {option!r}")
    assert seen > 200, "the docs lost their commands, or this test stopped finding them"
    assert not wrong, "\n".join(wrong)


def test_every_option_of_every_command_is_documented() -> None:
    text = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
    missing = []
    for path, command in _leaves(build_command()):
        for param in command.params:
            names = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
            longs = [o for o in names if o.startswith("--")]
            if getattr(param, "hidden", False) or not longs or "--help" in longs:
                continue
            if not any(re.search(re.escape(o) + r"(?![A-Za-z0-9-])", text) for o in longs):
                missing.append(f"ragstore {path} {'/'.join(longs)}")
    assert not missing, "options no page mentions:\n" + "\n".join(missing)
