"""The model layer: covariance structures of the random terms and θ's layout over them, families and
the Laplace approximation, residual structures (residual.py)."""
from .covariance import STRUCTURES, Covariance, Diagonal, Scalar, Unstructured, structure
from .layout import FactorStructure, ThetaLayout, theta_layout

__all__ = ["Covariance", "Unstructured", "Diagonal", "Scalar", "STRUCTURES", "structure",
           "FactorStructure", "ThetaLayout", "theta_layout"]
