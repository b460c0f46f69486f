"""Images for self-supervised pretraining: a fold's labeled training images (labels unused) plus imagesUnlabeled,
both as nnU-Net preprocessed them, sampled as random patches by nnU-Net's own data loader."""
import os
from typing import Dict, List, Tuple

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset, nnUNetDatasetBlosc2
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunet_semi.data.unlabeled import UNLABELED_IMAGES_FOLDER, ensure_unlabeled_preprocessed


class ConcatDataset(nnUNetBaseDataset):
    """Several preprocessed folders behind one nnU-Net dataset; identifiers are ``'<source>:<case>'``."""

    def __init__(self, sources: Dict[str, Tuple[str, List[str]]]):
        self.sources = {name: nnUNetDatasetBlosc2(folder, list(ids)) for name, (folder, ids) in sources.items()}
        super().__init__("", [f"{name}:{i}" for name, ds in self.sources.items() for i in ds.identifiers])

    def load_case(self, identifier):
        name, case = identifier.split(":", 1)
        return self.sources[name].load_case(case)

    @staticmethod
    def save_case(data, seg, properties, output_filename_truncated):
        raise NotImplementedError("ConcatDataset is read-only")

    @staticmethod
    def get_identifiers(folder: str) -> List[str]:
        raise NotImplementedError("ConcatDataset identifiers come from its sources")


def training_identifiers(preprocessed_dataset_folder_base: str, data_identifier: str, fold) -> List[str]:
    """The labeled cases nnU-Net would train on in ``fold`` (its splits_final.json, or nnU-Net's default 5-fold
    split, seed 12345, when the file does not exist yet); ``fold='all'``: every labeled case."""
    all_ids = sorted(nnUNetDatasetBlosc2.get_identifiers(join(preprocessed_dataset_folder_base, data_identifier)))
    if fold == "all":
        return all_ids
    splits_file = join(preprocessed_dataset_folder_base, "splits_final.json")
    splits = load_json(splits_file) if isfile(splits_file) else generate_crossval_split(all_ids, seed=12345,
                                                                                        n_splits=5)
    if int(fold) >= len(splits):
        raise ValueError(f"fold {fold} does not exist in {splits_file} ({len(splits)} folds)")
    return sorted(splits[int(fold)]["train"])


def pretraining_dataset(raw_dataset_folder: str, preprocessed_dataset_folder_base: str, plans_manager,
                        configuration_manager, dataset_json: dict, fold, num_processes: int = 2) -> ConcatDataset:
    """Labeled training images of ``fold`` (without labels) + all unlabeled images (preprocessed on demand)."""
    data_identifier = configuration_manager.data_identifier
    sources = {"labeled": (join(preprocessed_dataset_folder_base, data_identifier),
                           training_identifiers(preprocessed_dataset_folder_base, data_identifier, fold))}
    if os.path.isdir(join(raw_dataset_folder, UNLABELED_IMAGES_FOLDER)):
        folder = ensure_unlabeled_preprocessed(raw_dataset_folder, preprocessed_dataset_folder_base, plans_manager,
                                               configuration_manager, dataset_json, num_processes=num_processes)
        sources["unlabeled"] = (folder, nnUNetDatasetBlosc2.get_identifiers(folder))
    return ConcatDataset(sources)


def labeled_training_dataset(preprocessed_dataset_folder_base: str, configuration_manager, fold) -> nnUNetDatasetBlosc2:
    """The labeled training cases of ``fold`` with their segmentations (for supervised pretraining losses)."""
    data_identifier = configuration_manager.data_identifier
    folder = join(preprocessed_dataset_folder_base, data_identifier)
    return nnUNetDatasetBlosc2(folder, training_identifiers(preprocessed_dataset_folder_base, data_identifier, fold))
