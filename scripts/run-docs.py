#!/usr/bin/env python3
"""Runs the documentation (run by .ci/run): the shell blocks of the quick
start, the CLI tour, the 3-member cluster, membership changes, backup and
restore, TLS and the Python client, in order, as a reader pastes them.

Each scenario below starts in a fresh scratch directory that holds a copy
of the checkout's config/, examples/, schema/ and systemd/ (the docs' paths
"from the repository root" work, and nothing is written into the checkout),
with HOME in it (so ~ is scratch too), `nvkv` on PATH (this checkout's
build) and the Python environment of scripts/setup.sh first (pycapnp). It
runs in network and mount namespaces of its own, so the documented ports
(7379, ...) are free whatever else runs on the machine; so it needs root.

What a block is, in the sections SCENARIOS names:

- ```sh: every line is a command (a trailing `\\` or a here-document
  continues it); each must exit 0.
- ```console: `$ ` starts a command, the lines up to the next one are what
  it prints (stdout and stderr); a line `...` stands for any lines. The
  output must be what the docs show; `…` in a line stands for any text (a
  reason the system words its own way). A command may exit non-zero only when
  the docs show the CLI's error line (`nvkv...: ...`) for it. For the
  commands in LIVE (times, latencies, leadership that moves) numbers may
  differ, not the words.
- `nvkv serve ...` runs in the background (1.5 s after the server started
  just before it, as from shells opened one after the other); the next
  command waits until every server started so far prints its ready line. At a scenario's end
  every server gets SIGTERM and must have logged no ERROR line.
- A block preceded by `<!-- docs-check: skip REASON -->` is not run (and
  the reason is printed); in one preceded by `<!-- docs-check: numbers vary
  (WHY) -->` every command's numbers may differ (revisions are times);
  blocks without `sh` or `console` are samples, but a sample ready line
  (`nvkv ready: ...`) must be the last server's, numbers aside.

The first command that fails, or prints other than the docs show, stops
the run with both outputs and the servers' logs. Standard library only.
Usage (as root): python3 scripts/run-docs.py [--nvkv PATH] [--keep] [--only SCENARIO]
"""

import argparse
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

# (name, [(file, heading), ...]): each scenario's sections, run in order
# against the servers they start.
SCENARIOS = [
    ("one node", [("README.md", "Quick start"), ("README.md", "A tour of the command line"),
                  ("docs/operations.md", "Backup and restore")]),
    ("the Python client", [("docs/api.md", "Clients in other languages")]),
    ("a 3-member cluster", [("README.md", "A 3-member cluster in a minute")]),
    ("cluster operations", [("docs/cluster.md", "Three members on one machine"),
                            ("docs/cluster.md", "Changing the members")]),
    ("TLS", [("docs/operations.md", "TLS")]),
]

# Commands whose output holds live measurements: compared word by word,
# numbers aside.
LIVE = [re.compile(pattern) for pattern in (
    r"\bnvkv\b.*\bstatus\b(?!.*snapshot)",
    r"\bnvkv\b.*\bendpoint health\b",
)]

COMMAND_TIMEOUT = 60
SERVE_STAGGER = 1.5
READY_TIMEOUT = 60
STOP_TIMEOUT = 30
DONE = "__nvkv_docs_done"
SKIP = re.compile(r"<!--\s*docs-check:\s*skip\s+(.*?)\s*-->")
NUMBERS_VARY = re.compile(r"<!--\s*docs-check:\s*numbers vary\b.*?-->")
# The CLI's error line: `nvkv: ...`, `nvkv status: ...`, `nvkv member list: ...`.
CLI_ERROR = re.compile(r"^nvkv( [a-z-]+)*: ")


class Failed(Exception):
    pass


def section(path, heading):
    """The lines of the section `heading` of `path`, to the next heading of
    its level or above."""
    lines = (ROOT / path).read_text().splitlines()
    fenced = False
    start = level = None
    for number, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        match = re.match(r"^(#{1,6})\s+(.*?)\s*$", line)
        if not match:
            continue
        if start is None and match.group(2) == heading:
            start, level = number + 1, len(match.group(1))
        elif start is not None and len(match.group(1)) <= level:
            return lines[start:number]
    if start is None:
        raise Failed(f"{path} has no section {heading!r} (scripts/run-docs.py SCENARIOS names it)")
    return lines[start:]


def blocks(path, heading):
    """(kind, lines, skip reason or None, whether its numbers vary) of each
    fenced block of a section."""
    lines = section(path, heading)
    found = []
    index = 0
    while index < len(lines):
        fence = re.match(r"^\s*```(\w*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].lstrip().startswith("```"):
            end += 1
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        skip = SKIP.search(previous)
        live = NUMBERS_VARY.search(previous) is not None
        found.append((fence.group(1), lines[index + 1:end], skip.group(1) if skip else None, live))
        index = end + 1
    return found


def commands_of_sh(lines):
    """The commands of a sh block: lines, joined over trailing backslashes
    and here-documents."""
    commands = []
    index = 0
    while index < len(lines):
        command = lines[index]
        index += 1
        while command.endswith("\\") and index < len(lines):
            command += "\n" + lines[index]
            index += 1
        heredoc = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", command)
        if heredoc:
            while index < len(lines):
                command += "\n" + lines[index]
                index += 1
                if lines[index - 1].strip() == heredoc.group(1):
                    break
        if command.strip() and not command.lstrip().startswith("#"):
            commands.append((command, None))
    return commands


def commands_of_console(lines):
    """(command, expected output lines) of a console block."""
    commands = []
    for line in lines:
        if line.startswith("$ "):
            commands.append([line[2:], []])
        elif commands and commands[-1][0].endswith("\\") and not commands[-1][1]:
            commands[-1][0] += "\n" + line
        elif commands:
            commands[-1][1].append(line)
        elif line.strip():
            raise Failed(f"console block starts with output, not a `$ ` command: {line!r}")
    return [(command, expected) for command, expected in commands]


def without_comment(command):
    """`command` without a trailing `# comment` (outside quotes)."""
    quote = None
    for index, character in enumerate(command):
        if quote:
            if character == quote:
                quote = None
        elif character in "'\"":
            quote = character
        elif character == "#" and (index == 0 or command[index - 1].isspace()):
            return command[:index].rstrip()
    return command.rstrip()


def shape(line):
    """A line with its numbers blanked and its spacing collapsed."""
    return " ".join(re.sub(r"\d+(\.\d+)?", "#", line).split())


def matches(expected, actual, live):
    """Whether `actual` lines are what `expected` shows (`...` stands for
    any lines)."""
    def same(shown, printed):
        if "\u2026" in shown:
            pattern = ".*".join(re.escape(part) for part in shown.split("\u2026"))
            return re.fullmatch(pattern, printed) is not None
        return shape(shown) == shape(printed) if live else shown == printed

    def at(e, a):
        if e == len(expected):
            return a == len(actual)
        if expected[e] == "...":
            return any(at(e + 1, later) for later in range(a, len(actual) + 1))
        return a < len(actual) and same(expected[e], actual[a]) and at(e + 1, a + 1)

    return at(0, 0)


def trimmed(lines):
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


class Shell:
    """One bash in network and mount namespaces of its own, fed a command
    at a time, so that cwd, variables and servers carry from one to the
    next as in a reader's terminal."""

    def __init__(self, scratch, environment):
        self.scratch = scratch
        self.output = scratch / ".command-output"
        self.logs = scratch / ".serve-logs"
        self.logs.mkdir()
        self.servers = []  # (pid, log, command)
        self.waiting = []
        self.bash = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=scratch,
            env=environment, text=True, bufsize=1)
        self.send("ip link set lo up", expect_success=True)

    def send(self, script, expect_success=False):
        """Runs `script` in the shell; returns (exit code, output)."""
        self.bash.stdin.write(f"{{ {script}\n}} > {self.output} 2>&1 < /dev/null\necho {DONE} $?\n")
        self.bash.stdin.flush()
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while True:
            line = self.bash.stdout.readline()
            if not line:
                raise Failed(f"the shell ended running: {script}")
            if line.startswith(DONE):
                code = int(line.split()[1])
                break
            if time.monotonic() > deadline:
                raise Failed(f"no end within {COMMAND_TIMEOUT} s: {script}")
        output = self.output.read_text(errors="replace")
        if expect_success and code != 0:
            raise Failed(f"`{script}` exited {code}:\n{output}")
        return code, output

    def serve(self, command):
        """Starts `nvkv serve ...` in the background, a little after the
        server started before it, as a reader starts them in one shell after
        the other (the first member then runs alone for a while)."""
        if self.waiting:
            time.sleep(SERVE_STAGGER)
        log = self.logs / f"serve-{len(self.servers) + 1}.log"
        # Made here: the background command opens it only when it runs.
        log.touch()
        # Disowned: the shell says nothing when a server is killed.
        _, output = self.send(f"{command} > {log} 2>&1 < /dev/null &\necho $!\ndisown $!", expect_success=True)
        pid = int(output.split()[-1])
        self.servers.append((pid, log, command))
        self.waiting.append((pid, log, command))

    def wait_ready(self):
        """Waits for the ready line of every server started since the last wait."""
        deadline = time.monotonic() + READY_TIMEOUT
        for pid, log, command in self.waiting:
            while "nvkv ready: " not in log.read_text(errors="replace"):
                if not alive(pid):
                    raise Failed(f"`{command}` exited before it was ready:\n{log.read_text(errors='replace')}")
                if time.monotonic() > deadline:
                    raise Failed(f"`{command}` was not ready within {READY_TIMEOUT} s:\n"
                                 f"{log.read_text(errors='replace')}")
                time.sleep(0.05)
        self.waiting = []

    def close(self):
        """Stops every server (SIGTERM), then the shell; returns the ERROR
        lines the servers logged."""
        for pid, _, _ in self.servers:
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for pid, _, command in self.servers:
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                print(f"  (killed `{command}`: it did not stop within {STOP_TIMEOUT} s)")
        self.bash.stdin.close()
        self.bash.wait(timeout=STOP_TIMEOUT)
        return [f"{command}: {line}" for _, log, command in self.servers
                for line in log.read_text(errors="replace").splitlines() if " ERROR " in line]

    def server_logs(self):
        return "\n".join(f"--- {command} ---\n{log.read_text(errors='replace')[-3000:]}"
                         for _, log, command in self.servers)


def alive(pid):
    """Whether `pid` runs (and is not a zombie waiting for the shell)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_command(shell, command, expected, where, numbers_vary):
    """Runs one command of the docs and checks it."""
    shown = command.replace("\n", "\n  ")
    print(f"  $ {shown}")
    bare = without_comment(command.split("\n")[0]) if "\n" not in command else command
    if re.match(r"^nvkv serve\b", bare):
        shell.serve(bare.rstrip("&").rstrip())
        return
    if bare.endswith("&"):
        raise Failed(f"{where}: only `nvkv serve` may run in the background: {command}")
    shell.wait_ready()
    code, output = shell.send(command)
    actual = trimmed(output.splitlines())
    if expected is None:
        if code != 0:
            raise Failed(f"{where}: `{command}` exited {code}:\n{output}")
        return
    expected = trimmed(expected)
    live = numbers_vary or any(pattern.search(command) for pattern in LIVE)
    if not matches(expected, actual, live):
        raise Failed(f"{where}: `{command}` printed other than the docs show"
                     f"{' (numbers aside)' if live else ''}.\n--- the docs ---\n" + "\n".join(expected)
                     + "\n--- the output ---\n" + "\n".join(actual))
    if code != 0 and not any(CLI_ERROR.match(line) for line in expected):
        raise Failed(f"{where}: `{command}` exited {code}, and the docs show no error for it:\n{output}")


def check_ready_line(shell, shown, where):
    """A sample ready line after a server's start: the last server's, numbers
    aside (cores, sizes and ports are the machine's)."""
    shell.wait_ready()
    _, log, command = shell.servers[-1]
    ready = next(line for line in log.read_text(errors="replace").splitlines() if line.startswith("nvkv ready: "))
    print(f"  (the ready line of `{command}`)")
    if shape(ready) != shape(shown):
        raise Failed(f"{where}: `{command}` printed another ready line than the docs show.\n--- the docs ---\n"
                     f"{shown}\n--- the output ---\n{ready}")


def run_scenario(name, sections, nvkv, keep):
    print(f"scenario: {name}")
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="nvkv-docs-"))
    try:
        for directory in ("config", "examples", "schema", "systemd"):
            shutil.copytree(ROOT / directory, scratch / directory,
                            ignore=shutil.ignore_patterns("nvkv-data", "__pycache__"))
        (scratch / "home").mkdir()
        (scratch / "bin").mkdir()
        (scratch / "bin" / "nvkv").symlink_to(nvkv)
        # The log as a reader gets it: nvkv's default filter.
        environment = dict(os.environ, HOME=str(scratch / "home"))
        for variable in ("RUST_LOG", "RUST_BACKTRACE", "NVKV_TEST_BLOCK_DEVICE"):
            environment.pop(variable, None)
        python_env = pathlib.Path(os.environ.get(
            "NVKV_PYTHON_ENV", pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
            / "nvkv" / "python"))
        path = [str(scratch / "bin"), str(python_env / "bin"), environment.get("PATH", "")]
        environment["PATH"] = ":".join(path)
        shell = Shell(scratch, environment)
        errors = []
        try:
            for path_name, heading in sections:
                print(f" {path_name}, \"{heading}\"")
                for kind, lines, skip, numbers_vary in blocks(path_name, heading):
                    if kind == "" and lines and lines[0].startswith("nvkv ready: ") and shell.servers:
                        check_ready_line(shell, lines[0], f"{path_name}, \"{heading}\"")
                        continue
                    if kind not in ("sh", "console"):
                        continue
                    if skip:
                        print(f"  (not run: {skip})")
                        continue
                    parsed = commands_of_sh(lines) if kind == "sh" else commands_of_console(lines)
                    for command, expected in parsed:
                        run_command(shell, command, expected, f"{path_name}, \"{heading}\"", numbers_vary)
                shell.wait_ready()
        except Failed as failure:
            raise Failed(f"{failure}\n--- the servers' logs ---\n{shell.server_logs()}") from None
        finally:
            errors = shell.close()
        if errors:
            raise Failed(f"scenario {name}: the servers logged ERROR lines:\n" + "\n".join(errors))
    finally:
        if keep:
            print(f"  (kept {scratch})")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvkv", type=pathlib.Path, help="the nvkv binary (default: cargo build's)")
    parser.add_argument("--keep", action="store_true", help="keep each scenario's scratch directory")
    parser.add_argument("--only", metavar="NAME", help="run only the scenario of this name")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run-docs.py: the docs run in network and mount namespaces of their own (unshare), "
                 "which needs root: run it as root, as CI does")
    nvkv = arguments.nvkv
    if nvkv is None:
        subprocess.run(["cargo", "build", "--quiet", "--bin", "nvkv"], cwd=ROOT, check=True)
        nvkv = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "nvkv"
    nvkv = nvkv.resolve()
    if not os.access(nvkv, os.X_OK):
        sys.exit(f"run-docs.py: {nvkv} is not an executable nvkv binary")
    started = time.monotonic()
    try:
        for name, sections in SCENARIOS:
            if arguments.only in (None, name):
                run_scenario(name, sections, nvkv, arguments.keep)
    except Failed as failure:
        print(f"\nrun-docs.py: FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
    print(f"run-docs.py: every documented command ran as the docs show ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
