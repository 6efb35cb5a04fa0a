"""Self-training: a SAM fine-tuned on the labelled pairs labels the unlabelled pool; the confident masks it draws
become training pairs of the next fine-tune (the ``pseudo`` and ``synthetic_pseudo`` arms)."""
