"""`p2pindex completion`: the generated script completes commands, options and values."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from p2pindex.cli import main as cli_main
from p2pindex.cli.completion import script

bash = shutil.which("bash")


def complete(shell_script: str, line: str) -> list[str]:
    """What the script offers for ``line`` (the word being completed is its last word,
    empty after a trailing space), as bash would ask for it."""
    words = line.split()
    if line.endswith(" "):
        words.append("")
    assert bash is not None
    program = (
        shell_script
        + "\nCOMP_WORDS=("
        + " ".join(f"'{w}'" for w in words)
        + f")\nCOMP_CWORD={len(words) - 1}\n_p2pindex\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    )
    result = subprocess.run([bash, "-c", program], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return [w for w in result.stdout.split("\n") if w]


@pytest.fixture(scope="module")
def bash_script() -> str:
    return script(cli_main.build_parser(), "bash")


@pytest.mark.skipif(bash is None, reason="bash is not installed")
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("p2pindex pu", ["put"]),
        ("p2pindex st", ["status"]),
        ("p2pindex put user:1 alice --cons", ["--consistency"]),
        ("p2pindex get user:1 --consistency ", ["all", "one", "quorum"]),
        ("p2pindex get k --format ", ["json", "text"]),
        ("p2pindex cluster ce", ["certify"]),
        ("p2pindex cluster certify --auth", ["--authority"]),
        ("p2pindex token issue --role ", ["admin", "read", "write"]),
        ("p2pindex completion ", ["bash", "zsh", "--help", "-h"]),
        ("p2pindex get cluster --no", ["--node"]),
    ],
)
def test_bash_completes(bash_script: str, line: str, expected: list[str]) -> None:
    assert complete(bash_script, line) == expected


def test_every_command_is_in_the_script(bash_script: str) -> None:
    parser = cli_main.build_parser()
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    for name in action.choices:
        assert f"        {name}) words=" in bash_script, name


def test_zsh_script_loads_the_bash_layer() -> None:
    text = script(cli_main.build_parser(), "zsh")
    assert text.splitlines()[1] == "autoload -U +X bashcompinit && bashcompinit"
    assert "complete -o default -F _p2pindex p2pindex" in text
    zsh = shutil.which("zsh")
    if zsh is not None:
        result = subprocess.run([zsh, "-c", text], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr


def test_the_command_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["completion", "bash"]) == 0
    assert capsys.readouterr().out.startswith("# bash completion for p2pindex")
    with pytest.raises(SystemExit) as info:
        cli_main.main(["completion", "fish"])
    assert info.value.code == 2
