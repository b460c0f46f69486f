"""The benchmark datasets, written by the project's own converters from ``../shared/data`` (never downloaded).

Each function takes ``(raw_root, dataset_id)`` and returns the dataset folder it wrote (or found complete).
"""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NNUNET_SEMI_SHARED_DATA", REPO.parent / "shared" / "data"))


def _existing(raw_root: str, dataset_id: int):
    found = sorted(Path(raw_root).glob(f"Dataset{dataset_id:03d}_*"))
    return str(found[0]) if found and (found[0] / "dataset.json").is_file() else None


def _source(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"benchmark data missing: {path}. Fix: put the shared data beside the repository "
                                f"(../shared/data) or set NNUNET_SEMI_SHARED_DATA.")
    return str(path)


def hippocampus_5_labeled(raw_root: str, dataset_id: int, split_seed: int = 0) -> str:
    """MSD Hippocampus: 5 labeled training cases (the fold validates on them), 40 labeled test cases, the other 155
    training images and the 130 MSD imagesTs images unlabeled (split seeded with ``split_seed``: which cases are
    labeled and which are test)."""
    from dataset_conversion.msd import convert_msd_semi

    return _existing(raw_root, dataset_id) or convert_msd_semi(
        _source(SHARED_DATA / "hippocampus" / "Task04_Hippocampus"), dataset_id, num_labeled=5, num_val=0,
        num_test=40, num_unlabeled=None, seed=split_seed, output_root=raw_root)


#: the benchmark protocol's Hippocampus split: 40 test and 10 validation cases drawn with RandomState(1000), the
#: same for every labeled draw (and for 2d and 3d_fullres, case for case)
HIPPOCAMPUS_PROTOCOL = dict(num_val=10, num_test=40, test_seed=1000, fixed_validation=True)


def hippocampus_5_labeled_draw(raw_root: str, dataset_id: int, draw: int = 0) -> str:
    """MSD Hippocampus under the benchmark protocol: 5 labeled cases drawn with ``RandomState(draw)`` from the
    cases that are neither test nor validation; fixed test (40) and validation (10) cases; the other 145 training
    images and the 130 MSD imagesTs images unlabeled."""
    from dataset_conversion.msd import convert_msd_semi

    return _existing(raw_root, dataset_id) or convert_msd_semi(
        _source(SHARED_DATA / "hippocampus" / "Task04_Hippocampus"), dataset_id, num_labeled=5, num_unlabeled=None,
        seed=draw, output_root=raw_root, **HIPPOCAMPUS_PROTOCOL)


def hippocampus_all_labeled(raw_root: str, dataset_id: int) -> str:
    """The all-labeled bound of the Hippocampus protocol: the same test and validation cases, all 150 other
    training cases labeled (the MSD imagesTs images stay unlabeled; the labeled-only trainer does not read them)."""
    from dataset_conversion.msd import convert_msd_semi

    return _existing(raw_root, dataset_id) or convert_msd_semi(
        _source(SHARED_DATA / "hippocampus" / "Task04_Hippocampus"), dataset_id, num_labeled=150,
        num_unlabeled=None, seed=0, output_root=raw_root, **HIPPOCAMPUS_PROTOCOL)


def _acdc(raw_root: str, dataset_id: int, num_labeled: int) -> str:
    from dataset_conversion.acdc import convert_acdc_h5

    # SSL4MIS' own labeled patients (train.list order); the copy has no test.list: its 10 val.list patients are
    # the held-out test set
    return _existing(raw_root, dataset_id) or convert_acdc_h5(
        _source(SHARED_DATA / "acdc_h5"), num_labeled=num_labeled, selection="list", dataset_id=dataset_id,
        output_root=raw_root, val_as_test=True)


#: the benchmark protocol's ACDC split: test = the 10 val.list patients, validation = 5 training patients held out
#: with RandomState(0) (never SSL4MIS's 3 labeled ones), the same for every labeled draw
ACDC_PROTOCOL_VALIDATION = dict(val_as_test=True, num_val_from_train=5, val_seed=0)


def acdc_3_labeled_draw(raw_root: str, dataset_id: int, draw: int = 0) -> str:
    """ACDC at 3 labeled patients under the benchmark protocol: draw 0 = SSL4MIS's own 3 patients (train.list
    order), draw d > 0 = 3 patients drawn with ``RandomState(d)`` from the training patients left after the
    validation draw. Test (the 10 val.list patients) and validation (5 held-out training patients) are the same
    for every draw; the other training patients are unlabeled."""
    from dataset_conversion.acdc import convert_acdc_h5

    selection = dict(selection="list") if draw == 0 else dict(selection="random", seed=draw)
    return _existing(raw_root, dataset_id) or convert_acdc_h5(
        _source(SHARED_DATA / "acdc_h5"), num_labeled=3, dataset_id=dataset_id, output_root=raw_root,
        **selection, **ACDC_PROTOCOL_VALIDATION)


def acdc_all_labeled(raw_root: str, dataset_id: int) -> str:
    """The all-labeled bound of the ACDC protocol: every training patient labeled except the 5 validation patients
    (which are drawn before the labeled ones, so they are the same as in :func:`acdc_3_labeled_draw`)."""
    from dataset_conversion.acdc import convert_acdc_h5

    # 65 = 70 training patients - 5 validation; num_labeled=3 reserves SSL4MIS's 3 from the validation draw as above
    return _existing(raw_root, dataset_id) or convert_acdc_h5(
        _source(SHARED_DATA / "acdc_h5"), num_labeled=65, selection="list", dataset_id=dataset_id,
        output_root=raw_root, val_as_test=True, num_val_from_train=5, val_seed=0, val_reserved_first=3)


def acdc_3_labeled(raw_root: str, dataset_id: int) -> str:
    return _acdc(raw_root, dataset_id, 3)


def acdc_7_labeled(raw_root: str, dataset_id: int) -> str:
    return _acdc(raw_root, dataset_id, 7)


def la_8_labeled(raw_root: str, dataset_id: int) -> str:
    """Left atrium, UA-MT h5 release (``LA_SOURCE=<folder with train.list / test.list / 2018LA_Seg_Training Set>``):
    the first 8 of the 80 training cases labeled (UA-MT's choice), the 20 test cases held out."""
    from dataset_conversion.la import convert_la_h5

    source = os.environ.get("LA_SOURCE")
    if not source:
        raise FileNotFoundError("The LA profile needs the UA-MT h5 release: set LA_SOURCE=<its folder>.")
    return _existing(raw_root, dataset_id) or convert_la_h5(source, num_labeled=8, selection="list",
                                                            dataset_id=dataset_id, output_root=raw_root)
