"""The gpufleet node agent: discovers GPUs through NVML and reports them as GPU resources."""
