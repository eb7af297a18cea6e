"""The README and docs/*.md stay true to the repository: every relative link points to a file that exists,
every `#anchor` to a heading that exists (GitHub's slug rules), every `egt <command> [<sub>]` written in code
names a real CLI command, every `tests/...py[::test]` named exists, and the README stays short.

Fast and model-free: reads Markdown and imports the click group `egt.cli.cli` (no subprocess per command).
docs/results/ holds run outputs as the runs wrote them (their links point into the run folder) and is not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 300

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EGT_CALL = re.compile(r"(?<![\w.\-])egt(?:\.cli)?[ \t]+([^\n]*)")
TEST_REF = re.compile(r"\btests/[\w/]+\.py(?:::\w+)?")
SHELL_COMMENT = re.compile(r"(^|\s)#.*$")


def split_markdown(text: str) -> tuple[list[str], list[str]]:
    """(prose lines, code-block lines): fenced code blocks apart from the rest."""
    prose, code, in_code = [], [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_code = not in_code
            continue
        (code if in_code else prose).append(line)
    return prose, code


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: rendered text, lowercased, punctuation other than '-' and '_' dropped,
    spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and '_' (unicode too, as GitHub does)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in prose:
        m = HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    text = INLINE_CODE.sub("", "\n".join(prose))  # a link written inside `code` is not a link
    return LINK.findall(text)


def code_texts(path: Path) -> list[str]:
    """Everything written as code: each code-block line (without its shell comment) and each inline code span."""
    prose, code = split_markdown(path.read_text(encoding="utf-8"))
    spans = [m.group(2) for m in INLINE_CODE.finditer("\n".join(prose))]
    return [SHELL_COMMENT.sub("", line) for line in code] + spans


def is_placeholder(token: str) -> bool:
    return not re.fullmatch(r"[a-z][a-z0-9_-]*", token)


def egt_commands(text: str) -> list[tuple[str, ...]]:
    """Each `egt WORD [SUB]` (or `-m egt.cli WORD`) in text, as the words the CLI dispatches on: SUB only after
    a command group (`egt data convert`). Options before a word are skipped; a placeholder (`<command>`,
    `COMMAND`) ends the check."""
    from egt.cli import cli

    groups = {name for name, command in cli.commands.items() if isinstance(command, click.Group)}
    found = []
    for m in EGT_CALL.finditer(text):
        words = []
        for token in m.group(1).split():
            token = token.rstrip(",.;:)`'\"")
            if token.startswith(("-", "[-")):
                continue
            if is_placeholder(token.split("|")[0]):
                break
            words.append(token)
            if len(words) == 2 or not set(words[0].split("|")) & groups:
                break
        if words:
            found.append(tuple(words))
    return found


def unknown_command(words: tuple[str, ...]) -> str | None:
    """None when `egt words...` is a real command, else what is wrong. `a|b|c` means each of a, b, c."""
    from egt.cli import cli

    for name in words[0].split("|"):
        command = cli.commands.get(name)
        if command is None:
            return f"no command `egt {name}` (commands: {', '.join(sorted(cli.commands))})"
        if isinstance(command, click.Group):
            if len(words) < 2:
                continue  # `egt data` alone names the group
            for sub in words[1].split("|"):
                if sub not in command.commands:
                    return f"no command `egt {name} {sub}` (has: {', '.join(sorted(command.commands))})"
    return None


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_and_anchors_resolve(page: Path):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
            continue
        if anchor:
            if dest.suffix != ".md":
                broken.append(f"{target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(dest):
                broken.append(f"{target}: no heading with anchor #{anchor} in {page_id(dest)}")
    assert not broken, f"{page_id(page)}: broken links:\n  " + "\n  ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_egt_commands_in_code_exist(page: Path):
    wrong = []
    for text in code_texts(page):
        for words in egt_commands(text):
            problem = unknown_command(words)
            if problem:
                wrong.append(f"`egt {' '.join(words)}`: {problem}")
    assert not wrong, f"{page_id(page)}:\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_named_tests_exist(page: Path):
    missing = []
    for ref in sorted(set(TEST_REF.findall(page.read_text(encoding="utf-8")))):
        file, _, name = ref.partition("::")
        path = ROOT / file
        if not path.exists():
            missing.append(f"{ref}: no file")
        elif name and not re.search(rf"^\s*(?:async\s+)?def {re.escape(name)}\(", path.read_text(), re.M):
            missing.append(f"{ref}: no test {name} in {file}")
    assert not missing, f"{page_id(page)}:\n  " + "\n  ".join(missing)


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}: detail goes to docs/)"


def test_readme_tours_every_command():
    """The README's command table names every command of the CLI, and links each to its docs/cli.md section."""
    from egt.cli import cli

    text = README.read_text(encoding="utf-8")
    expected = []
    for name, command in sorted(cli.commands.items()):
        if isinstance(command, click.Group):
            expected += [f"{name} {sub}" for sub in sorted(command.commands)]
        else:
            expected.append(name)
    cli_anchors = anchors(ROOT / "docs" / "cli.md")
    missing = [c for c in expected
               if f"[`egt {c}`](docs/cli.md#{github_slug('egt ' + c)})" not in text
               or github_slug("egt " + c) not in cli_anchors]
    assert not missing, f"README.md's command table lacks (or docs/cli.md has no section for): {missing}"


# The checker itself: each check can fail.

def test_slug_follows_github():
    assert github_slug("`egt data convert`") == "egt-data-convert"
    assert github_slug("The demo's settings over 3 seeds, machines A and B") == "the-demos-settings-over-3-seeds-machines-a-and-b"
    assert github_slug("Using a trained judge (`egt.judge.api`, `egt.judge.trl_reward`)") == \
        "using-a-trained-judge-egtjudgeapi-egtjudgetrl_reward"
    assert github_slug("`make demo`, seed 0, on three machines") == "make-demo-seed-0-on-three-machines"


def test_checks_catch_what_they_are_for(tmp_path):
    assert egt_commands("egt score model=x") == [("score",)]
    assert egt_commands("accelerate launch -m egt.cli rl --config x") == [("rl",)]
    assert egt_commands("egt --debug data convert --format mmrb") == [("data", "convert")]
    assert egt_commands("egt <command> --help") == []
    assert egt_commands("import egt") == []
    assert unknown_command(("score",)) is None
    assert unknown_command(("data", "convert|inspect|synth")) is None
    assert unknown_command(("scroe",)) is not None
    assert unknown_command(("data", "convrt")) is not None
    assert unknown_command(("eval",)) is None
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nope) [file](missing.md) `[not a link](x.md)`\n\n"
                    "```\n# not a heading\n```\n")
    assert anchors(page) == {"title"}
    assert links(page) == ["#title", "#nope", "missing.md"]
