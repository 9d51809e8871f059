"""README.md's "Running a cluster", command by command, as a new user would type it.

The commands are read out of README.md itself (its fenced blocks and the commands quoted in
its prose), so a README change that no longer works fails here. The only edits are the ones
in the substitution table below: the README's 10.0.0.x addresses become free loopback ports
and its /var/lib and /etc paths move under the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pindex.cli.local_cluster import free_ports
from p2pindex.security.credentials import CREDENTIALS_ENV

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
HOST = "127.0.0.1"
KEY, VALUE = "user:1", "alice"  # the key and value README's own example writes


def section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same level."""
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n")
    end = text.find(f"\n{level} ", start + len(heading) + 2)
    return text[start : end if end != -1 else None]


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def lines_of(block: str) -> list[str]:
    """Shell lines of a block, backslash continuations joined."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


class Shell:
    """Just enough of sh for README's commands: variables, `export`, `$(cat FILE)`, and
    `p2pindex serve` run in the background until it prints its ready line."""

    def __init__(self, cwd: Path, substitutions: dict[str, str]) -> None:
        self.cwd = cwd
        self.substitutions = substitutions
        self.variables: dict[str, str] = {}
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("P2PINDEX_NODE", CREDENTIALS_ENV)
        }
        self.servers: dict[str, subprocess.Popen] = {}  # by the README's data directory

    def substitute(self, line: str) -> str:
        for old, new in self.substitutions.items():
            line = line.replace(old, new)
        return line

    def words(self, line: str) -> list[str]:
        words: list[str] = []
        for word in shlex.split(self.substitute(line), comments=True):
            if word.startswith("$") and word[1:] in self.variables:
                words.extend(shlex.split(self.variables[word[1:]]))
                continue
            words.append(
                re.sub(
                    r"\$\(cat ([^)]+)\)",
                    lambda m: (self.cwd / m.group(1)).read_text().strip(),
                    word,
                )
            )
        return words

    def argv(self, words: list[str]) -> list[str]:
        return [sys.executable, "-m", "p2pindex", *words[1:]] if words[0] == "p2pindex" else words

    def run(self, line: str, expect: int = 0) -> subprocess.CompletedProcess | None:
        """Run one line; a command must exit ``expect`` (its result is returned for more
        checks)."""
        words = self.words(line)
        if not words:
            return None
        env = self.env
        if re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", words[0]) and len(words) > 1:  # NAME=VALUE command
            name, _, value = words.pop(0).partition("=")
            env = {**self.env, name: value}
        elif words[0] == "export" or re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", words[0]):
            name, _, value = (words[1] if words[0] == "export" else words[0]).partition("=")
            if words[0] == "export":
                self.env[name] = value
            else:
                self.variables[name] = value
            return None
        if words[:2] == ["p2pindex", "serve"]:
            self.serve(words)
            return None
        result = subprocess.run(
            self.argv(words), cwd=self.cwd, env=env, capture_output=True, timeout=60
        )
        assert result.returncode == expect, (line, result.returncode, result.stdout, result.stderr)
        return result

    def serve(self, words: list[str]) -> None:
        log = (self.cwd / f"serve-{len(self.servers)}.log").open("wb")
        process = subprocess.Popen(
            self.argv(words),
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        self.servers[" ".join(words)] = process
        readable, _, _ = select.select([process.stdout], [], [], 30)  # a hung node fails
        line = process.stdout.readline().decode() if readable else ""
        process.ready_line = line  # type: ignore[attr-defined]
        assert line.startswith("ready node_id="), (words, line, Path(log.name).read_text())

    def stop_all(self) -> None:
        for process in self.servers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.servers.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def until_formed(shell: Shell, addresses: list[str], timeout: float = 30.0) -> None:
    """What README says to look for before using a new cluster: `p2pindex status` on each
    node lists every node alive and active."""
    deadline = time.monotonic() + timeout
    for address in addresses:
        while True:
            result = subprocess.run(
                shell.argv(["p2pindex", "status", "--node", address, "--format", "json"]),
                cwd=shell.cwd,
                env=shell.env,
                capture_output=True,
                timeout=30,
            )
            if result.returncode == 0:
                members = json.loads(result.stdout)["members"]
                ready = [m for m in members if (m["liveness"], m["state"]) == ("alive", "active")]
                if len(ready) == len(addresses):
                    break
            assert time.monotonic() < deadline, (address, result.stdout, result.stderr)
            time.sleep(0.3)


def self_signed(directory: Path) -> None:
    """The certificate README's HTTP listener is configured with, made for 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ),
            *(
                "-nodes",
                "-days",
                "1",
                "-subj",
                f"/CN={HOST}",
                "-addext",
                f"subjectAltName=IP:{HOST}",
            ),
            *("-keyout", str(directory / "http.key"), "-out", str(directory / "http.crt")),
        ],
        check=True,
        capture_output=True,
    )


def test_the_readme_cluster_walkthrough_works_as_written(tmp_path: Path) -> None:
    readme = README.read_text()
    running = section(readme, "## Running a cluster")
    first_steps = running.split("\n### ")[0]
    deployment = section(running, "### Deployment with a configuration file")
    command_line = section(readme, "## Command line")
    cluster_block, deployment_block = fenced(running, "sh")
    (toml_block,) = fenced(running, "toml")
    which_node = next(b for b in fenced(command_line, "sh") if "P2PINDEX_NODE" in b)
    synopsis = fenced(command_line, "sh")[0]

    a, b, c, d, http = free_ports(5)
    substitutions = {  # README's names for things -> where this test can put them
        "10.0.0.1:7400": f"{HOST}:{a}",
        "10.0.0.2:7400": f"{HOST}:{b}",
        "10.0.0.3:7400": f"{HOST}:{c}",
        "10.0.0.4:7400": f"{HOST}:{d}",  # the node added before one leaves (step 6)
        "10.0.0.1:8400": f"{HOST}:{http}",
        "/var/lib/p2pindex/": f"{tmp_path}/var/lib/p2pindex/",
        "/etc/p2pindex/": f"{tmp_path}/etc/p2pindex/",
        "HOST:PORT": f"{HOST}:{a}",  # placeholders in prose and synopsis: node a, README's key
        "KEY": KEY,
    }
    shell = Shell(tmp_path, substitutions)
    started = time.monotonic()
    try:
        # 1. The cluster block: an authority, a certificate per node, three nodes.
        for line in lines_of(cluster_block):
            if "# once per node" in line:  # the README means: for each node's data directory
                for node in "abc":
                    shell.run(line.replace("/var/lib/p2pindex/a", f"/var/lib/p2pindex/{node}"))
            else:
                shell.run(line)
        serving = list(shell.servers.values())
        assert len(serving) == 3
        for process, port in zip(serving, (a, b, c), strict=True):
            assert re.fullmatch(
                rf"ready node_id=\S+ address={HOST}:{port}\n",
                process.ready_line,  # type: ignore[attr-defined]
            )
        a_id = re.search(r"node_id=(\S+)", serving[0].ready_line).group(1)  # type: ignore[attr-defined]

        # 2. Client credentials, as the prose says: `token issue ...`, then `export ...`.
        for command in re.findall(
            r"`(p2pindex token issue [^`]+|export P2PINDEX_CREDENTIALS=[^`]+)`", first_steps
        ):
            if "..." not in command:  # `dev`'s line, a placeholder, is about another cluster
                shell.run(command)
        assert CREDENTIALS_ENV in shell.env

        until_formed(shell, [f"{HOST}:{port}" for port in (a, b, c)])

        # 3. "Which node": $P2PINDEX_NODE, then `p2pindex put user:1 alice`.
        for line in lines_of(which_node):
            result = shell.run(line)
        assert result is not None and result.stdout.startswith(b"ok:"), result

        # 4. The command-line synopsis, options in brackets left out: get, status, explain.
        commands: dict[str, str] = {}
        for line in lines_of(synopsis):
            bare = re.sub(r"\[[^\]]*\]", "", line.split("#")[0]).split()
            commands.setdefault(bare[1], " ".join(bare))
        got = shell.run(commands["get"])
        assert got is not None and got.stdout == VALUE.encode(), got
        status = shell.run(commands["status"])
        assert status is not None and a_id in status.stdout.decode(), status
        shell.run(commands["explain"])

        # 5. Deployment with a configuration file: node a stops (SIGTERM; one of three with
        # N=3, it stops without leaving) and comes back from node-a.toml, as itself, with its
        # HTTP API.
        first = serving[0]
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        config = Path(shell.substitute(toml_block.splitlines()[0].lstrip("# ")))
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(shell.substitute(toml_block))
        self_signed(config.parent)
        (tmp_path / "http.crt").write_bytes((config.parent / "http.crt").read_bytes())
        results: list[subprocess.CompletedProcess | None] = []
        for line in lines_of(deployment_block):
            results.append(shell.run(line))
            if line.startswith("p2pindex serve"):
                until_formed(shell, [f"{HOST}:{port}" for port in (a, b, c)])
        shown, _, _, fetched = results
        assert shown is not None and b"data_dir" in shown.stdout, shown
        restarted = list(shell.servers.values())[-1]
        assert re.fullmatch(
            rf"ready node_id={a_id} address={HOST}:{a} http=\S+\n",
            restarted.ready_line,  # type: ignore[attr-defined]
        )
        assert fetched is not None and fetched.stdout == VALUE.encode(), fetched

        # 6. `p2pindex leave --node HOST:PORT`, with the admin credentials the prose issues:
        # refused while only N=3 nodes are left, as the README says; so a fourth node is added
        # the way the cluster block adds each node (certify, the same serve line), and then
        # node a hands its data over, leaves and exits 0.
        admin, leave = re.findall(
            r"`(p2pindex token issue --authority [^`]+|\S+=\S+ p2pindex leave [^`]+)`", deployment
        )
        shell.run(admin)
        refused = shell.run(leave, expect=1)
        assert refused is not None and b"add a node first" in refused.stderr, refused
        for line in lines_of(cluster_block):
            fourth = line.replace("/var/lib/p2pindex/c", "/var/lib/p2pindex/d")
            if "# once per node" in line:
                shell.run(line.replace("/var/lib/p2pindex/a", "/var/lib/p2pindex/d"))
            elif fourth != line:
                shell.run(fourth.replace("--listen 10.0.0.3:7400", "--listen 10.0.0.4:7400"))
        until_formed(shell, [f"{HOST}:{port}" for port in (a, b, c, d)])
        shell.run(leave)
        assert restarted.wait(timeout=30) == 0

        # 7. With node a gone, $P2PINDEX_NODE's list falls over to node b: delete, then get
        # answers "not found".
        deleted = shell.run(commands["delete"])
        assert deleted is not None and deleted.stdout.startswith(b"ok: deleted"), deleted
        gone = subprocess.run(
            shell.argv(shell.words(commands["get"])),
            cwd=tmp_path,
            env=shell.env,
            capture_output=True,
            timeout=60,
        )
        assert gone.returncode == 3, gone  # README's exit table: 3 = key not found
    finally:
        shell.stop_all()
    assert time.monotonic() - started < 90
