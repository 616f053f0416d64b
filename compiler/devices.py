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
    precision: str = "bf16"  # the deployment precision when the spec names none
    # The fitter's parallel-shapes rule (compiler/design_rules.py): heads and KV heads
    # are multiples of `tensor_parallel`, each shard's feed-forward width of `tile`
    # (the matmul tile in elements the part runs at full speed on).
    tensor_parallel: int = 1
    tile: int = 64


GB = 1024**3

DEVICES: dict[str, Device] = {
    # 32 Ampere tensor cores x 512 dense FP16 FLOP/clk x 625 MHz; 128-bit LPDDR5 68 GB/s;
    # 8 GB shared with the OS and the rest of the application.
    # Edge and mobile deployments ship weight-only int8 (W8A16: int8 weights, fp16
    # activations and KV cache), as TensorRT-LLM, llama.cpp (Q8_0) and MLC-LLM do on
    # these parts: memory, not FLOPs, is what runs out there.
    "edge": Device("edge", "Jetson Orin Nano 8GB", 10e12, 68e9, 4 * GB, 0.3, "int8"),
    # Adreno 750 GPU fp16; LPDDR5X-4800 (9.6 Gb/s x 64 bit) 76.8 GB/s; half a 16 GB phone.
    "mobile": Device("mobile", "flagship phone GPU (Snapdragon 8 Gen 3)", 9e12, 76.8e9, 8 * GB, 0.25, "int8"),
    # 16 Zen 4 cores x 64 bf16 FLOP/clk (AVX512_BF16) x ~4.5 GHz; dual-channel DDR5-5200 83.2 GB/s.
    # One AVX-512 register holds 32 bf16 values: oneDNN blocks matmuls by 32.
    "cpu": Device("cpu", "16-core desktop CPU (Ryzen 9 7950X, AVX-512)", 4.6e12, 83.2e9, 64 * GB, 0.5, tile=32),
    "consumer_gpu": Device("consumer_gpu", "RTX 4090 24GB", 165.2e12, 1008e9, 24 * GB, 0.4),
    "gpu": Device("gpu", "L40S 48GB", 362e12, 864e9, 48 * GB, 0.4),
    # Tensor-parallel over the node: FLOP/s and bandwidth add up, and the model's
    # heads, KV heads and feed-forward width split 8 ways (Megatron-LM).
    "datacenter_gpu": Device(
        "datacenter_gpu", "8x H100 SXM 80GB node", 8 * 989e12, 8 * 3.35e12, 8 * 80 * GB, 0.4, tensor_parallel=8
    ),
}


# Deployment precisions (`constraints.precision`): bytes per weight. int8 is
# weight-only: activations and the KV cache stay 16-bit (`ACTIVATIONS_AT`).
PRECISION_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
ACTIVATIONS_AT: dict[str, str] = {"int8": "fp16"}
# `constraints.dtype`, the older spelling, in NumPy's words.
DTYPE_PRECISION: dict[str, str] = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def precision_of(constraints) -> tuple[str, bool]:
    """The spec's deployment precision and whether it is the device's default:
    `precision`, else the older `dtype`, else the device's."""
    if getattr(constraints, "precision", None):
        return constraints.precision, False
    if getattr(constraints, "dtype", None):
        return DTYPE_PRECISION[constraints.dtype], False
    return DEVICES[constraints.device].precision, True


def weight_bytes(precision: str) -> int:
    return PRECISION_BYTES[precision]


def activation_bytes(precision: str) -> int:
    return PRECISION_BYTES[ACTIVATIONS_AT.get(precision, precision)]
