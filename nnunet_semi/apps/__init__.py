"""The commands built on the library, one module each (their console scripts are in ``setup.py``):

- :mod:`~nnunet_semi.apps.demo` (``nnunet_semi_demo``): the end-to-end demo on the generated dataset of
  :mod:`~nnunet_semi.apps.demo_data`;
- :mod:`~nnunet_semi.apps.self_training` (``nnunet_semi_self_training``): self-training rounds through nnU-Net's
  own commands;
- :mod:`~nnunet_semi.apps.metrics` (``nnunet_semi_metrics``): Dice, HD95 and ASSD (mm) tables of prediction folders;
- :mod:`~nnunet_semi.apps.small_plans` (``nnunet_semi_small_plans``): reduced nnU-Net plans for CPU runs and tests;
- :mod:`~nnunet_semi.apps.ext_trainer` (``nnunet_semi_ext_trainer``): the ``nnUNet_extTrainer`` shell line.

Commands that belong to one library concept stay with it: ``nnunet_semi_preprocess_unlabeled`` in
:mod:`nnunet_semi.data.unlabeled`, ``nnunet_semi_pair_pretrained`` in :mod:`nnunet_semi.pretrained.pairing`;
``nnunet_semi_pretrain`` is :mod:`pretraining.cli`.
"""
