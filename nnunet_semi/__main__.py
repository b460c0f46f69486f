"""``nnunet_semi`` / ``python -m nnunet_semi``: the installed version, the trainers and the pretraining methods.

Every trainer is started with nnU-Net's own commands (``nnUNetv2_train D C F -tr <trainer>``); this command only
says what is installed. The list is the plugin's registry (:data:`nnunet_semi.training.TRAINERS`): one line per
trainer and named variant (``_paper``, ablations); the short-budget variants ``<trainer>_<E>epochs[_<I>its]`` are
counted, and listed with ``--all``. The methods' papers, equations and defaults: ``documentation/methods.md``.
"""
import argparse
import re
import sys
from typing import List, Optional

from nnunet_semi import __version__

#: ``<trainer>_<E>epochs`` and ``<trainer>_<E>epochs_<I>its`` (:mod:`nnunet_semi.training.budgets`)
BUDGET_SUFFIX = re.compile(r"_\d+epochs(_\d+its)?$")


#: abbreviations after which a full stop does not end a sentence
_ABBREVIATIONS = ("eq", "Eq", "Sec", "Fig", "Tr", "al", "e.g", "i.e", "vs", "cf", "PI", "ref")


def _first_sentence(text: str, limit: int = 110) -> str:
    """The first sentence of a docstring's first paragraph, reST markup removed, at most ``limit`` characters."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    paragraph = re.sub(r":\w+:`~?([^`]+)`", r"\1", paragraph).replace("``", "").rstrip(":")
    for match in re.finditer(r"\.(\s+|$)", paragraph):
        if not paragraph[:match.start()].endswith(_ABBREVIATIONS):
            paragraph = paragraph[:match.start() + 1]
            break
    paragraph = paragraph[:1].upper() + paragraph[1:]
    return paragraph if len(paragraph) <= limit else paragraph[:limit - 3].rstrip() + "..."


def trainer_summary(cls) -> str:
    """One line about a trainer class: its own docstring's first sentence, else its module's (``<name>: ...``)."""
    if cls.__doc__:
        return _first_sentence(cls.__doc__)
    return _first_sentence((sys.modules[cls.__module__].__doc__ or "").strip().removeprefix(f"{cls.__name__}: "))


def report(include_budget_variants: bool = False) -> str:
    """The text ``nnunet_semi --version`` prints."""
    import nnunetv2  # noqa: F401  (imported by the trainers anyway; its version is part of the report)
    from importlib.metadata import PackageNotFoundError, version

    from nnunet_semi.pretrained.contract import PRETRAIN_OPTIONS
    from nnunet_semi.training import TRAINERS

    try:
        nnunet_version = version("nnunetv2")
    except PackageNotFoundError:  # a source checkout without nnunetv2's metadata
        nnunet_version = "unknown"
    listed = {n: c for n, c in TRAINERS.items() if include_budget_variants or not BUDGET_SUFFIX.search(n)}
    width = max(len(n) for n in listed)
    lines = [f"nnunet-semi {__version__} (nnU-Net plugin; nnunetv2 {nnunet_version})", "",
             f"Trainers (nnUNetv2_train DATASET CONFIGURATION FOLD -tr <name>), {len(listed)} of {len(TRAINERS)}"
             + ("" if include_budget_variants else
                f"; the other {len(TRAINERS) - len(listed)} are short-budget variants <name>_<E>epochs[_<I>its] "
                f"(--all lists them)") + ":"]
    lines += [f"  {name:<{width}}  {trainer_summary(cls)}" for name, cls in listed.items()]
    lines += ["", "Pretraining methods (nnunet_semi_pretrain -d DATASET -c CONFIGURATION -m <name>): "
              + ", ".join(sorted(PRETRAIN_OPTIONS.values())),
              "Papers, equations, defaults and variants: documentation/methods.md"]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="nnunet_semi", description="Print the installed nnunet-semi version, its trainers (one line each) and "
                                        "its pretraining methods.",
        epilog="example: nnunet_semi --version")
    parser.add_argument("--version", action="store_true", help="print the version and the trainer list (default)")
    parser.add_argument("--all", action="store_true", help="list the short-budget variants too")
    args = parser.parse_args(argv)
    print(report(include_budget_variants=args.all))


if __name__ == "__main__":
    main()
