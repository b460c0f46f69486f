"""The bare GPU machine, simulated here: imports of packages that machine lacks fail.

Put this folder first on ``PYTHONPATH`` (``run_check.sh`` does with ``KIT_SIMULATE_BARE=1``; the kit's test does)
and every Python process started below it, nnU-Net's spawned workers included, refuses to import a top-level module
of an installed distribution that is neither on the machine (``machine_packages.txt``) nor carried
(``wheels.txt``) nor this project (on the machine it is the working tree on ``PYTHONPATH``). The standard library is
never refused. A module that only the local versions of machine packages need could be refused wrongly; ``tzdata``
(pandas' time zones) is allowed for that reason.

A refusal is a ``ModuleNotFoundError`` naming the module, as on the machine: optional imports (``try: import wandb``)
behave as they will there, and a missing wheel shows up as a failed stage here instead of on the machine.
"""
import importlib.abc
import importlib.metadata
import os
import re
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_ALLOWED_EXTRA = {"nnunet-semi", "tzdata"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _allowed() -> set:
    kit = _HERE.parent
    words = [w for line in (kit / "machine_packages.txt").read_text().splitlines()
             if not line.lstrip().startswith("#") for w in line.split()]
    carried = [line.split()[0].split("==")[0] for line in (kit / "wheels.txt").read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    return {_normalize(w) for w in words + carried} | _ALLOWED_EXTRA


def _refused() -> set:
    allowed = _allowed()
    return {top for top, dists in importlib.metadata.packages_distributions().items()
            if not any(_normalize(d) in allowed for d in dists)} - set(sys.stdlib_module_names)


class _BareMachine(importlib.abc.MetaPathFinder):
    def __init__(self, refused: set):
        self.refused = refused

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.refused:
            raise ModuleNotFoundError(f"No module named {name!r} (GPU kit bare-machine simulation: not on the GPU "
                                      f"machine and not carried in benchmarks/gpu/wheels.txt)", name=name)
        return None


# computed once (reading every installed distribution's metadata takes a second) and handed to the processes this
# one starts through the environment
_CACHE = "KIT_BARE_REFUSED"
REFUSED = set(os.environ[_CACHE].split(",")) if os.environ.get(_CACHE) else _refused()
os.environ[_CACHE] = ",".join(sorted(REFUSED))
sys.meta_path.insert(0, _BareMachine(REFUSED))
