"""metarl: meta-reinforcement learning on Gymnasium + MuJoCo with PyTorch."""

__version__ = "0.1.0"
