#!/usr/bin/env python3
"""Keeps README.md and docs/ true to the repository (run by .ci/run):

- every relative link (and image) resolves: the file or directory exists,
  and a `#fragment` names a heading of the target (GitHub's anchors);
- the configuration reference in docs/operations.md names every key
  config/nvkv.toml has, and the docs name no `section.key` it lacks.

Prints each problem with its file and line, and exits 1 when there is one.
Standard library only. Usage: python3 scripts/check-docs.py
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
# `node.rs` is a file, not a key.
FILE_EXTENSIONS = {"rs", "md", "toml", "sh", "py", "json", "capnp", "service", "conf", "txt", "png", "gp"}


def prose_lines(path):
    """(number, line) of a Markdown file outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def anchors(path):
    """The fragments GitHub gives the headings of a Markdown file."""
    seen = {}
    found = set()
    for _, line in prose_lines(path):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def check_links(files):
    problems = []
    for path in files:
        for number, line in prose_lines(path):
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue  # http:, https:, mailto:
                file_part, _, fragment = target.partition("#")
                resolved = (path.parent / file_part).resolve() if file_part else path
                where = f"{path.relative_to(ROOT)}:{number}"
                if not resolved.exists():
                    problems.append(f"{where}: link to {target}: {file_part} does not exist")
                    continue
                if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                    problems.append(f"{where}: link to {target}: {resolved.relative_to(ROOT)} has no heading "
                                    f"#{fragment}")
    return problems


def config_keys():
    """Every `section.key` of config/nvkv.toml, the commented-out ones
    (`# key = ...` right under their section) included."""
    keys = set()
    section = None
    for line in (ROOT / "config" / "nvkv.toml").read_text().splitlines():
        header = re.match(r"^\[(\w+)\]\s*$", line)
        if header:
            section = header.group(1)
            continue
        key = re.match(r"^(?:# )?(\w+) = ", line)
        if key and section:
            keys.add(f"{section}.{key.group(1)}")
    return keys


def check_config_reference(files):
    keys = config_keys()
    sections = {key.split(".")[0] for key in keys}
    problems = []
    reference = ROOT / "docs" / "operations.md"
    named = set(re.findall(r"`(\w+\.\w+)`", reference.read_text()))
    for key in sorted(keys - named):
        problems.append(f"docs/operations.md: the configuration reference does not name `{key}` "
                        "(config/nvkv.toml has it)")
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for name in re.findall(r"`(\w+)\.(\w+)`", line):
                key = ".".join(name)
                if name[0] in sections and key not in keys and name[1] not in FILE_EXTENSIONS:
                    problems.append(f"{path.relative_to(ROOT)}:{number}: `{key}` is not a key of config/nvkv.toml")
    return problems


def main():
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
    problems = check_links(files) + check_config_reference(files)
    for problem in problems:
        print(problem)
    if problems:
        sys.exit(f"check-docs: {len(problems)} problem(s) in README.md and docs/")
    print(f"check-docs: {len(files)} files, every relative link resolves and every config key is documented")


if __name__ == "__main__":
    main()
