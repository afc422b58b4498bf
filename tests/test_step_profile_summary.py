# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The step profile's totals: the GPU's busy time counts each kernel once (an operator's self
device time repeats its kernels'), per step; the report's lines say so."""

from types import SimpleNamespace

from torch.autograd import DeviceType

from ultra_hstu_plugin.train.step_profile import render, summarize


def _event(key, count, cpu_us, device_us, device_type):
    return SimpleNamespace(
        key=key,
        count=count,
        self_cpu_time_total=cpu_us,
        self_device_time_total=device_us,
        device_type=device_type,
        is_user_annotation=False,
    )


class _Prof:
    def __init__(self, events):
        self._events = events

    def key_averages(self):
        return self._events


EVENTS = [
    # aten::mm launched a 3 ms kernel: its own row shows the kernel's time too
    _event("aten::mm", 4, 400.0, 3000.0, DeviceType.CPU),
    _event("sm90_gemm_kernel", 4, 0.0, 3000.0, DeviceType.CUDA),
    _event("aten::add", 8, 200.0, 1000.0, DeviceType.CPU),
    _event("elementwise_kernel", 8, 0.0, 1000.0, DeviceType.CUDA),
]


def test_gpu_busy_counts_each_kernel_once_per_step():
    s = summarize(_Prof(EVENTS), steps=2, wall_s=0.010, device_type="cuda")
    assert s["gpu_busy_ms_per_step"] == 2.0  # (3 + 1) ms over 2 steps, not 4.0
    assert s["wall_ms_per_step"] == 5.0
    assert s["cpu_op_ms_per_step"] == 0.3
    assert [r["name"] for r in s["top_cpu"]] == ["aten::mm", "aten::add"]
    text = render(s)
    assert "GPU busy (kernels' self time): 2.00 ms a step (40% of the wall)" in text


def test_on_cpu_there_is_no_gpu_line():
    s = summarize(_Prof(EVENTS[::2]), steps=1, wall_s=0.002, device_type="cpu")
    assert s["gpu_busy_ms_per_step"] is None and s["top_gpu"] == []
    assert "GPU busy" not in render(s)
