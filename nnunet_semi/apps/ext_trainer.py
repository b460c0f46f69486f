"""Small command-line helpers."""
import argparse
import os
import shlex

from nnunet_semi import ext_trainer_dir


def ext_trainer_value(existing: str | None = None) -> str:
    """Value for ``nnUNet_extTrainer``: the existing entries (if any) with our shim directory appended once."""
    entries = [e for e in (existing or "").split(os.pathsep) if e.strip()]
    ours = ext_trainer_dir()
    if ours not in entries:
        entries.append(ours)
    return os.pathsep.join(entries)


def ext_trainer_entry():
    """``nnunet_semi_ext_trainer``: print the shell line that lets nnU-Net's commands find our trainers.

    Usage: ``eval "$(nnunet_semi_ext_trainer)"``. An existing ``nnUNet_extTrainer`` value is kept.
    """
    parser = argparse.ArgumentParser(description=ext_trainer_entry.__doc__,
                                     epilog='example: eval "$(nnunet_semi_ext_trainer)"')
    parser.add_argument("--dir-only", action="store_true", help="print only the shim directory")
    args = parser.parse_args()
    if args.dir_only:
        print(ext_trainer_dir())
    else:
        print(f"export nnUNet_extTrainer={shlex.quote(ext_trainer_value(os.environ.get('nnUNet_extTrainer')))}")


if __name__ == "__main__":
    ext_trainer_entry()
