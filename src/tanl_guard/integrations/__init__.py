"""Integrations of tanl_guard with third-party frameworks (MONAI, MLflow)."""
