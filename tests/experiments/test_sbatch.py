"""trainer=ddp_sbatch: a plain sbatch allocation (one task, several devices), where Lightning starts the ranks."""

import hydra
from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

SBATCH_ONE_TASK = {"SLURM_JOB_ID": "42", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
                   "SLURM_NODELIST": "node1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}  # fmt: skip


def trainer_of(compose_cfg, preset: str):
    cfg = compose_cfg("finetune", [f"trainer={preset}", "trainer.accelerator=cpu", "trainer.devices=2",
                                   "trainer.precision=32"])  # fmt: skip
    return hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)


def test_in_a_one_task_allocation_lightning_starts_the_ranks_itself(compose_cfg, monkeypatch):
    for key, value in SBATCH_ONE_TASK.items():
        monkeypatch.setenv(key, value)
    plain = trainer_of(
        compose_cfg, "ddp"
    )  # Lightning takes SLURM to have started every rank: none would start
    assert isinstance(plain.strategy.cluster_environment, SLURMEnvironment)
    assert plain.strategy.cluster_environment.creates_processes_externally
    trainer = trainer_of(compose_cfg, "ddp_sbatch")
    assert isinstance(trainer.strategy.cluster_environment, LightningEnvironment)
    assert trainer.num_devices == 2 and not trainer.strategy.cluster_environment.creates_processes_externally
