"""The model layer: covariance structures of the random terms and θ's layout over them, families and
the Laplace approximation, residual structures (residual.py)."""
from .covariance import STRUCTURES, CompoundSymmetry, Covariance, Diagonal, Scalar, Unstructured, structure
from .layout import FactorStructure, ThetaLayout, theta_layout

__all__ = ["Covariance", "Unstructured", "Diagonal", "Scalar", "CompoundSymmetry", "STRUCTURES", "structure",
           "FactorStructure", "ThetaLayout", "theta_layout"]
