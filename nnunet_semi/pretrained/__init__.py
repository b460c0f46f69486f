"""The pretraining -> fine-tuning contract, imported by both sides (``pretraining/`` writes, the trainers of
``nnunet_semi.training`` read): checkpoint naming and ablation variants, the provenance record and the
missing-checkpoint error (:mod:`.contract`), loading weights into the planned networks with key, shape and method
checks (:mod:`.loading`)."""
from nnunet_semi.pretrained.contract import (ANY_METHOD_ENV, PRETRAINED_ENV, PretrainedWeightsError, checkpoint_path,
                                             folder_name, mmgl_variant, output_folder, provenance, recorded_method)
from nnunet_semi.pretrained.loading import (load_into_planned_networks, load_pretrained_networks, load_pretraining,
                                            planned_networks)

__all__ = ["ANY_METHOD_ENV", "PRETRAINED_ENV", "PretrainedWeightsError", "checkpoint_path", "folder_name",
           "load_into_planned_networks", "load_pretrained_networks", "load_pretraining", "mmgl_variant",
           "output_folder", "planned_networks", "provenance", "recorded_method"]
