"""gpufleet: a Kubernetes operator for a fleet of GPU hosts."""
