"""fetalgen: few real fetal-head ultrasound pairs -> many synthetic pairs -> a better SAM.

Packages:
    data          readers (HC18, generic folders, synthetic sets, phantoms), splits, augmentation
    diffusion     the joint two-channel (image, mask) diffusion model, sampling, post-processing
    segmentation  SAM building, prompts, embedding cache, fine-tuning module
    metrics       overlap, surface distances, biometry, synthetic-data QC
    baselines     trivial references every SAM result is shown beside
    cli           thin Hydra entry points
"""

__version__ = "0.1.0"
