"""Device classes as numbers: the cost model's inputs.

Figures are representative parts of each class (sources in docs/cost_model.md):
dense bf16/f16 tensor throughput, memory bandwidth, and the memory one model may use
by default (a serving node for datacenter GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    name: str
    example: str
    flops: float  # peak dense FLOP/s at the inference dtype
    bandwidth: float  # bytes/s
    capacity: int  # bytes available to one model by default
    utilization: float  # fraction of peak FLOP/s a well-tuned forward pass reaches


GB = 1024**3

DEVICES: dict[str, Device] = {
    "edge": Device("edge", "Jetson Orin Nano 8GB", 20e12, 68e9, 4 * GB, 0.3),
    "mobile": Device("mobile", "flagship phone NPU/GPU (Snapdragon 8 Gen 3)", 15e12, 77e9, 8 * GB, 0.25),
    "cpu": Device("cpu", "16-core server CPU (AVX-512)", 2e12, 100e9, 64 * GB, 0.5),
    "consumer_gpu": Device("consumer_gpu", "RTX 4090 24GB", 165e12, 1008e9, 24 * GB, 0.4),
    "gpu": Device("gpu", "L40S 48GB", 362e12, 864e9, 48 * GB, 0.4),
    "datacenter_gpu": Device("datacenter_gpu", "8x H100 SXM 80GB node", 8 * 989e12, 8 * 3.35e12, 8 * 80 * GB, 0.4),
}
