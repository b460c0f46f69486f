nnUNet_results=$WORK/results_seed0 .venv/bin/nnUNetv2_plan_and_preprocess -d 980 -c 3d_fullres -np 2 -npfp 2
# plans nnUNetPlansBench3d8: nnunet_semi.apps.small_plans.make_small_plans('Dataset980_Hippocampus', target_plans='nnUNetPlansBench3d8', **{'base_features': 8, 'max_features': 64, 'batch_size': 4, 'configurations': ['3d_fullres']})
nnUNet_results=$WORK/results_seed0 .venv/bin/nnunet_semi_preprocess_unlabeled -d 980 -c 3d_fullres -p nnUNetPlansBench3d8 -np 2
nnUNet_results=$WORK/results_seed0 nnUNet_semi_seed=0 nnUNet_n_proc_DA=0 nnUNet_semi_threads=1 .venv/bin/nnUNetv2_train Dataset980_Hippocampus 3d_fullres 0 -tr nnUNetTrainerLabeledOnly_40epochs_50its -p nnUNetPlansBench3d8 -device cpu
