"""Data handling for semi-supervised nnU-Net: unlabeled images (discovery, validation, cached preprocessing)."""
from nnunet_semi.data.unlabeled import (UnlabeledDataError, ensure_unlabeled_preprocessed, find_unlabeled_cases,
                                        preprocess_unlabeled, preprocess_unlabeled_entry,
                                        unlabeled_preprocessed_folder)

__all__ = ['UnlabeledDataError', 'ensure_unlabeled_preprocessed', 'find_unlabeled_cases', 'preprocess_unlabeled',
           'preprocess_unlabeled_entry', 'unlabeled_preprocessed_folder']
