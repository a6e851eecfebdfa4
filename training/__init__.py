"""hepzoo.training: config, losses, loop, checkpoints and DDP for the MLPF and flash-sim models (see docs/ARCHITECTURE.md).

    from hepzoo.training import load_config, train
    result = train(load_config("configs/mlpf-gnnlsh.yaml", ["optim.lr=3e-4"]))
    result = train(load_config("configs/flashsim-jet.yaml"))   # family-specific data/loss: training/tasks.py
"""

from hepzoo.training.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from hepzoo.training.config import TrainConfig, load_config
from hepzoo.training.losses import focal_loss, loss_counts, mlpf_loss
from hepzoo.training.loop import train

__all__ = [
    "TrainConfig",
    "focal_loss",
    "load_checkpoint",
    "load_config",
    "load_model_weights",
    "loss_counts",
    "mlpf_loss",
    "save_checkpoint",
    "train",
]
