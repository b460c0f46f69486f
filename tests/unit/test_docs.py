"""The documentation stays true to the code: every registered trainer is on the methods page, every console script
of setup.py is documented and its ``--help`` shows an example that parses, every relative link (and anchor) in the
README and documentation/ resolves, ``python -m nnunet_semi --version`` prints setup.py's version, every error class
the package raises is on the troubleshooting page, and nothing refers to the repository's surroundings
(``../shared``) outside the one section on the project's own real-data tests."""
import argparse
import ast
import configparser
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "documentation"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
PACKAGE_DIRS = [REPO / "nnunet_semi", REPO / "pretraining", REPO / "dataset_conversion"]
#: the one place that may name the data folder beside the repository: (page, heading of the section)
SURROUNDINGS_SECTION = (DOCS / "testing.md", "## Running the project's own real-data tests")
SURROUNDINGS = re.compile(r"\.\./shared|shared/(data|papers)")


def _token(name: str) -> re.Pattern:
    """``name`` as a whole identifier (``nnUNetTrainerCPS`` is not found inside ``nnUNetTrainerCPS_paper``)."""
    return re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])")


def _console_scripts() -> dict:
    """``{script: "module:function"}`` from setup.py's ``console_scripts`` (read, not executed)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "console_scripts"
                                              for k in node.keys):
            entries = ast.literal_eval(node.values[[k.value for k in node.keys].index("console_scripts")])
            return dict(e.replace(" ", "").split("=", 1) for e in entries)
    raise AssertionError("setup.py has no console_scripts")


def _without_code_blocks(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation but '-' and '_' removed, spaces -> '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set:
    seen, out = {}, set()
    for line in _without_code_blocks(page.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            slug = _slug(match.group(1))
            n = seen.get(slug, 0)
            out.add(slug if n == 0 else f"{slug}-{n}")
            seen[slug] = n + 1
    return out


def test_every_registered_trainer_is_on_the_methods_page():
    from nnunet_semi.__main__ import BUDGET_SUFFIX
    from nnunet_semi.training import TRAINERS

    methods = (DOCS / "methods.md").read_text()
    named = [n for n in TRAINERS if not BUDGET_SUFFIX.search(n)]
    assert len(named) >= 40 and "nnUNetTrainerCPS" in named and "nnUNetTrainerCPS_paper" in named
    missing = [n for n in named if not _token(n).search(methods)]
    assert not missing, f"trainers registered in TRAINERS but not on documentation/methods.md: {missing}"
    # the budget variants are the documented families' (their base name is on the page)
    undocumented = {BUDGET_SUFFIX.sub("", n) for n in TRAINERS} - set(named)
    assert not undocumented, undocumented


def test_every_console_script_is_documented():
    scripts = _console_scripts()
    assert {"nnunet_semi", "nnunet_semi_pretrain", "nnunet_semi_convert_msd"} <= set(scripts)
    text = "\n".join(p.read_text() for p in PAGES)
    missing = [s for s in scripts if not _token(s).search(text)]
    assert not missing, f"console scripts of setup.py not in README.md or documentation/: {missing}"


class _Parsed(Exception):
    """Raised instead of running a command once its arguments parsed."""


def test_every_console_script_help_shows_an_example_that_parses(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")  # the example stays on one line in an 80-column terminal
    original_parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original_parse_args(self, args, namespace)
        raise _Parsed

    for script, target in _console_scripts().items():
        module, function = target.split(":")
        entry = getattr(importlib.import_module(module), function)
        monkeypatch.setattr(sys, "argv", [script, "--help"])
        with pytest.raises(SystemExit) as exit_info:
            entry()
        assert exit_info.value.code == 0, script
        help_text = capsys.readouterr().out
        lines = help_text.splitlines()
        examples = [line for line in lines if line.startswith("example: ")]
        assert len(examples) == 1, f"{script} --help shows {len(examples)} 'example: ...' lines"
        following = lines[lines.index(examples[0]) + 1:]
        assert not following or not following[0].strip(), f"{script}'s example is wrapped: {examples[0]}"
        command = re.search(rf"(?<![\w]){script}((?: [^\s)\"#]+)*)", examples[0])
        assert command, f"{script}'s example does not run {script}: {examples[0]}"
        monkeypatch.setattr(sys, "argv", [script, *shlex.split(command.group(1))])
        with monkeypatch.context() as patch:
            patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
            try:
                entry()
            except _Parsed:
                pass
            except SystemExit:
                pytest.fail(f"{script}'s example does not parse: {examples[0]}\n{capsys.readouterr().err}")
            else:
                pytest.fail(f"{script} did not parse its arguments")
        capsys.readouterr()


def test_every_relative_link_and_anchor_resolves():
    broken, checked = [], 0
    for page in PAGES:
        for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", _without_code_blocks(page.read_text())):
            if re.match(r"[a-z]+:", target):  # http(s), mailto
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            checked += 1
            if not file.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(REPO)}: {target} (no heading '#{anchor}' in {file.name})")
    assert checked > 50
    assert not broken, "\n".join(broken)


def test_the_anchor_rule_is_githubs():
    assert _slug("Which trainer should I use?") == "which-trainer-should-i-use"
    assert _slug("Starting from a trained nnU-Net (`-pretrained_weights`)") == \
        "starting-from-a-trained-nnu-net--pretrained_weights"


def test_python_m_nnunet_semi_prints_setup_pys_version_and_the_trainers():
    setup_version = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO, capture_output=True,
                                   text=True, check=True).stdout.strip().splitlines()[-1]
    out = subprocess.run([sys.executable, "-m", "nnunet_semi", "--version"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert re.match(r"\d+\.\d+\.\d+", setup_version), setup_version
    assert out.splitlines()[0].startswith(f"nnunet-semi {setup_version} ")
    lines = [line.split() for line in out.splitlines() if line.startswith("  nnUNetTrainer")]
    names = [parts[0] for parts in lines]
    assert "nnUNetTrainerCPS" in names and "nnUNetTrainerFixMatch_ce" in names
    assert not any(re.search(r"_\d+epochs", n) for n in names)  # budget variants only with --all
    assert all(len(parts) > 1 for parts in lines)  # one line each: name and summary
    citation = configparser.ConfigParser()
    citation.read_string("[cff]\n" + "\n".join(line for line in (REPO / "CITATION.cff").read_text().splitlines()
                                               if re.match(r"(version|license):", line)))
    assert citation["cff"]["version"] == setup_version and citation["cff"]["license"] == "Apache-2.0"


def test_no_page_refers_to_the_repositorys_surroundings_outside_the_real_data_test_section():
    page, heading = SURROUNDINGS_SECTION
    found = []
    for doc in PAGES:
        section = None
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("## "):
                section = line.strip()
            if SURROUNDINGS.search(line) and not (doc == page and section == heading):
                found.append(f"{doc.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
    assert SURROUNDINGS.search(page.read_text()), "the real-data test section no longer says where the data is"


def test_no_docstring_cites_a_paper_by_a_path():
    found = [f"{f.relative_to(REPO)}:{n}" for d in PACKAGE_DIRS for f in sorted(d.rglob("*.py"))
             for n, line in enumerate(f.read_text().splitlines(), 1) if re.search(r"papers/[\w-]+\.md", line)]
    assert not found, found


def _raised_and_defined_errors():
    defined, raised = set(), set()
    for directory in PACKAGE_DIRS:
        for file in directory.rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                        isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception"))) for b in node.bases):
                    defined.add(node.name)
                elif isinstance(node, ast.Raise) and node.exc is not None:
                    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                    if isinstance(exc, ast.Name) and (exc.id.endswith(("Error", "Exception", "Exit"))):
                        raised.add(exc.id)
    return defined, raised


def test_every_error_class_the_package_defines_or_raises_is_on_the_troubleshooting_page():
    defined, raised = _raised_and_defined_errors()
    assert {"UnlabeledDataError", "PretrainedWeightsError", "ConversionError"} <= defined
    assert {"ValueError", "NotImplementedError", "RuntimeError"} <= raised
    page = (DOCS / "troubleshooting.md").read_text()
    missing = sorted(name for name in defined | raised if not _token(name).search(page))
    assert not missing, f"error classes raised by the package but not in documentation/troubleshooting.md: {missing}"
