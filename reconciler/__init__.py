"""reconciler: converge BentoCloud API tokens to what YAML manifests declare."""

__version__ = "0.1.0"
