nnUNet_results=$WORK/results_seed0 .venv/bin/nnUNetv2_plan_and_preprocess -d 952 -c 2d -np 2 -npfp 2
# plans nnUNetPlansBenchLowRes: nnunet_semi.utils.small_plans.make_small_plans('Dataset952_ACDC', target_plans='nnUNetPlansBenchLowRes', **{'base_features': 8, 'max_features': 64, 'batch_size': 8, 'configurations': ['2d'], 'spacing_factor': 2.0})
nnUNet_results=$WORK/results_seed0 .venv/bin/nnUNetv2_preprocess -d 952 -plans_name nnUNetPlansBenchLowRes -c 2d -np 2
nnUNet_results=$WORK/results_seed0 nnUNet_semi_seed=0 nnUNet_n_proc_DA=0 .venv/bin/nnUNetv2_train 952 2d 0 -tr nnUNetTrainerLabeledOnly_20epochs_50its -p nnUNetPlansBenchLowRes -device cpu
nnUNet_results=$WORK/results_seed0 nnUNet_semi_seed=0 nnUNet_n_proc_DA=0 .venv/bin/nnUNetv2_predict -i $WORK/raw/Dataset952_ACDC/imagesTs -o $WORK/predictions/seed0/labeled_only -d 952 -c 2d -f 0 -tr nnUNetTrainerLabeledOnly_20epochs_50its -p nnUNetPlansBenchLowRes -device cpu -npp 1 -nps 1 --disable_tta
nnUNet_results=$WORK/results_seed0 nnUNet_semi_seed=0 nnUNet_n_proc_DA=0 .venv/bin/nnUNetv2_train 952 2d 0 -tr nnUNetTrainerCPS_20epochs_50its -p nnUNetPlansBenchLowRes -device cpu
# interrupted (the run was restarted with fewer methods to fit the session): the next line re-ran it
nnUNet_results=$WORK/results_seed0 nnUNet_semi_seed=0 nnUNet_n_proc_DA=0 .venv/bin/nnUNetv2_train 952 2d 0 -tr nnUNetTrainerCPS_20epochs_50its -p nnUNetPlansBenchLowRes -device cpu
nnUNet_results=$WORK/results_seed0 nnUNet_semi_seed=0 nnUNet_n_proc_DA=0 .venv/bin/nnUNetv2_predict -i $WORK/raw/Dataset952_ACDC/imagesTs -o $WORK/predictions/seed0/cps -d 952 -c 2d -f 0 -tr nnUNetTrainerCPS_20epochs_50its -p nnUNetPlansBenchLowRes -device cpu -npp 1 -nps 1 --disable_tta
nnUNet_results=$WORK/results_seed0 nnUNet_semi_seed=0 nnUNet_n_proc_DA=0 .venv/bin/nnUNetv2_train 952 2d 0 -tr nnUNetTrainerURPC_20epochs_50its -p nnUNetPlansBenchLowRes -device cpu
# stopped after a few seconds to fit the session's CPU time: URPC, MC-Net, Mean Teacher and the methods not listed here have no result on this profile yet
nnUNet_results=$WORK/results_seed0 nnUNet_semi_seed=0 nnUNet_n_proc_DA=0 .venv/bin/nnUNetv2_train 952 2d 0 -tr nnUNetTrainerBCP_20epochs_50its -p nnUNetPlansBenchLowRes -device cpu
nnUNet_results=$WORK/results_seed0 nnUNet_semi_seed=0 nnUNet_n_proc_DA=0 .venv/bin/nnUNetv2_predict -i $WORK/raw/Dataset952_ACDC/imagesTs -o $WORK/predictions/seed0/bcp -d 952 -c 2d -f 0 -tr nnUNetTrainerBCP_20epochs_50its -p nnUNetPlansBenchLowRes -device cpu -npp 1 -nps 1 --disable_tta
