"""The model layer: families, the Laplace approximation and (from one-model) covariance structures."""
