"""kdmech: watch what knowledge distillation does to a transformer's circuits."""

from kdmech.errors import KdmechError

__all__ = ["KdmechError"]
__version__ = "0.1.0"
