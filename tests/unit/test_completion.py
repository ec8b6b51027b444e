"""Shell completion is click's own (README "Shell completion"): the documented variable
produces a script, and commands and choices complete."""
from click.testing import CliRunner

from provisioner.cli import main


def complete(words: str, cword: int) -> list[str]:
    env = {"_VNET_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    result = CliRunner().invoke(main, [], env=env, prog_name="vnet")
    assert result.exit_code == 0, result.output
    return [line.split(",", 1)[1] for line in result.output.splitlines()]


def test_bash_source_prints_a_completion_script():
    result = CliRunner().invoke(main, [], env={"_VNET_COMPLETE": "bash_source"},
                                prog_name="vnet")
    assert result.exit_code == 0 and "_vnet_completion()" in result.output
    assert "complete -o nosort -F _vnet_completion vnet" in result.output


def test_commands_and_choices_complete():
    assert complete("vnet image p", 2) == ["prune"]
    assert "natnetwork" in complete("vnet create --mode ", 3)
    assert complete("vnet image build --cloud ", 4) == ["debian12"]
