"""Hardware: what a machine can give a model (detected here, or described by a spec/profile)."""

from toolkit.hardware.model import Gpu, Hardware, Host

__all__ = ["Gpu", "Hardware", "Host"]
