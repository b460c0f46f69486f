"""The wheels the GPU kit carries (``wheels.txt``), their LZMA re-compression and the size of what travels.

Standard library only, so that ``fetch_wheels.sh`` runs it with any ``python3``::

    python3 benchmarks/gpu/wheels.py list              # NAME==VERSION how, one line each (for fetch_wheels.sh)
    python3 benchmarks/gpu/wheels.py repack FILE.whl   # re-compress a wheel's members with LZMA, in place
    python3 benchmarks/gpu/wheels.py report [--dir .whl]   # a markdown table of the wheels, and the total that
                                                           # travels (repository + wheels) against 64 MiB
    python3 benchmarks/gpu/wheels.py check-versions    # the pins against the running interpreter's packages

Re-compression: a wheel is a zip archive and pip extracts it with Python's ``zipfile``, which reads LZMA members;
the files, their names and the RECORD (hashes of the uncompressed contents) stay as they are.
"""
import argparse
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import List, NamedTuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WHEEL_LIST = HERE / "wheels.txt"
MACHINE_LIST = HERE / "machine_packages.txt"
LIMIT_MIB = 64.0  # what travels to the device machine per call: the working tree plus carried paths


class Wheel(NamedTuple):
    name: str
    version: str
    how: str
    why: str


def normalize(name: str) -> str:
    """PEP 503 normalization: ``SimpleITK`` and ``simpleitk``, ``acvl_utils`` and ``acvl-utils`` are the same."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_wheel_list(path: Path = WHEEL_LIST) -> List[Wheel]:
    wheels = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec, how, why = line.split(None, 2)
        name, version = spec.split("==")
        wheels.append(Wheel(name, version, how, why.strip()))
    return wheels


def read_machine_packages(path: Path = MACHINE_LIST) -> set:
    words = [w for line in path.read_text().splitlines() if not line.lstrip().startswith("#") for w in line.split()]
    return {normalize(w) for w in words}


def repack_lzma(path: Path) -> None:
    """Rewrite the zip archive ``path`` with every member LZMA-compressed (same names, contents and order)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as target:
        for info in source.infolist():
            member = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            member.external_attr = info.external_attr
            member.compress_type = zipfile.ZIP_LZMA
            target.writestr(member, source.read(info))
    os.replace(tmp, path)


def is_lzma(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return all(info.compress_type == zipfile.ZIP_LZMA for info in archive.infolist())


def wheel_file(folder: Path, wheel: Wheel) -> Path:
    """The file of ``wheel`` in ``folder`` (wheel file names use ``_`` for ``-``, any case)."""
    stem = normalize(wheel.name).replace("-", "_")
    found = [f for f in folder.glob("*.whl") if f.name.lower().startswith(f"{stem}-{wheel.version}-".lower())]
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: expected one wheel of {wheel.name}=={wheel.version}, found "
                                f"{[f.name for f in found]}. Fix: bash benchmarks/gpu/fetch_wheels.sh")
    return found[0]


def travelling_bytes(repo: Path = REPO) -> int:
    """Bytes of what the device tool sends besides carried paths: tracked files and untracked files git does not
    ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout
    return sum((repo / p).stat().st_size for p in out.decode().split("\0") if p and (repo / p).is_file())


def report(folder: Path) -> str:
    mib = 1024 ** 2
    lines = ["| wheel | file | MiB | how | why |", "|---|---|---|---|---|"]
    total = 0
    for wheel in read_wheel_list():
        path = wheel_file(folder, wheel)
        size = path.stat().st_size
        total += size
        how = wheel.how + (" (LZMA: yes)" if wheel.how.endswith("lzma") and is_lzma(path) else "")
        lines.append(f"| {wheel.name}=={wheel.version} | `{path.name}` | {size / mib:.2f} | {how} | {wheel.why} |")
    extra = sorted(set(folder.glob("*.whl")) - {wheel_file(folder, w) for w in read_wheel_list()})
    repo = travelling_bytes()
    lines += ["", f"wheels: {total / mib:.2f} MiB; repository (tracked + untracked, not ignored): {repo / mib:.2f} "
                  f"MiB; together {(total + repo) / mib:.2f} MiB of {LIMIT_MIB:g} MiB"]
    if extra:
        lines.append(f"NOT IN wheels.txt (remove them: two versions of a package stop the install): "
                     f"{[e.name for e in extra]}")
    if (total + repo) / mib > LIMIT_MIB:
        lines.append("TOO LARGE: the device tool refuses more than 64 MiB")
    return "\n".join(lines)


def check_versions() -> List[str]:
    """Pins of wheels.txt that differ from the running interpreter's installed versions: ``[message, ...]``."""
    from importlib import metadata

    problems = []
    for wheel in read_wheel_list():
        try:
            installed = metadata.version(wheel.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{wheel.name}: not installed here")
            continue
        if installed != wheel.version:
            problems.append(f"{wheel.name}: wheels.txt pins {wheel.version}, installed here {installed}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    repack = sub.add_parser("repack")
    repack.add_argument("files", nargs="+")
    rep = sub.add_parser("report")
    rep.add_argument("--dir", default=str(REPO / ".whl"))
    sub.add_parser("check-versions")
    args = parser.parse_args(argv)
    if args.command == "list":
        for wheel in read_wheel_list():
            print(f"{wheel.name}=={wheel.version} {wheel.how}")
    elif args.command == "repack":
        for f in args.files:
            before = Path(f).stat().st_size
            repack_lzma(Path(f))
            print(f"{Path(f).name}: {before / 1024 ** 2:.2f} -> {Path(f).stat().st_size / 1024 ** 2:.2f} MiB (LZMA)")
    elif args.command == "report":
        print(report(Path(args.dir)))
    elif args.command == "check-versions":
        problems = check_versions()
        print("\n".join(problems) or "every pin of wheels.txt is the installed version")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
