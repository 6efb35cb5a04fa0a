"""Small shared helpers: files, seeding, Hydra task plumbing."""
