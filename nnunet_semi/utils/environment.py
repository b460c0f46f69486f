"""The environment variables every nnunet-semi command honours (trainers, ``nnunet_semi_pretrain``, the demo and the
benchmarks set or read them by these names)."""
#: ``nnUNet_semi_seed=<int>`` seeds Python, NumPy and torch at start-up (``+ rank`` under DDP)
SEED_ENV = "nnUNet_semi_seed"
#: torch's intra-op thread count for a CPU run. ``nnUNetv2_train -device cpu`` sets torch to all cores; two such
#: trainings on one machine then slow each other several-fold. ``nnUNet_semi_threads=1`` lets two runs share 2 cores.
THREADS_ENV = "nnUNet_semi_threads"
#: ``nnUNet_semi_allow_duplicates=1`` accepts unlabeled images whose voxel data equal an imagesTr / imagesTs image
#: (refused otherwise: leakage); ``nnunet_semi_preprocess_unlabeled --allow-duplicates`` does the same
ALLOW_DUPLICATES_ENV = "nnUNet_semi_allow_duplicates"
