"""Running a training loop on Ray Train: one driver for every llmlab training job (m12's DeepSpeed
pretraining, m17's DDP run over token shards)."""

from __future__ import annotations

import os


def fit(loop, config: dict, *, workers: int, cpus_per_worker: float, gpus_per_worker: float, name: str,
        storage: str, address: str | None = None):
    """Run ``loop(config)`` on ``workers`` Ray Train workers (a torch.distributed group: gloo on CPU, NCCL on
    GPUs) on the cluster at ``address`` (None: the one this process is connected to, the one ``RAY_ADDRESS``
    names, or a new local instance), and return the :class:`ray.train.Result`."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    started = not ray.is_initialized()
    if started:
        env = {k: os.environ[k] for k in ("GLOO_SOCKET_IFNAME", "OMP_NUM_THREADS", "WANDB_MODE") if k in os.environ}
        # A Ray job's driver: the job's runtime env reaches the workers already (and Ray refuses a second one
        # that sets the same variables). Anywhere else, the workers get this process's settings.
        in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
        ray.init(address=address, runtime_env=None if in_job else {"env_vars": env}, log_to_driver=False)
    try:
        resources = {"CPU": cpus_per_worker} | ({"GPU": gpus_per_worker} if gpus_per_worker else {})
        trainer = TorchTrainer(
            loop, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                         resources_per_worker=resources),
            torch_config=TorchConfig(backend="nccl" if gpus_per_worker else "gloo"),
            run_config=RunConfig(name=name, storage_path=storage))
        return trainer.fit()
    finally:
        if started:
            ray.shutdown()
