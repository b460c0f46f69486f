"""Finding an installed console script (nnU-Net's ``nnUNetv2_*``, ours ``nnunet_semi_*``) for a subprocess: the one
of the running interpreter's environment first, so that a command started from a virtual environment runs that
environment's nnU-Net even when the environment is not activated."""
import shutil
import sys
from pathlib import Path
from typing import Optional


def command_beside_interpreter(name: str) -> Optional[str]:
    """The console script ``name`` installed next to the running interpreter (its environment's ``bin/``), or None."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def installed_command(name: str) -> Optional[str]:
    """:func:`command_beside_interpreter`, else the one on ``PATH``, else None."""
    return command_beside_interpreter(name) or shutil.which(name)
