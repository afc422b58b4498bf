# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Diagnostic: the ULTRA-HSTU layer (k1 = 0) against GR's STULayer on the GPU, per kernel
and projection GEMM: forward relative errors between every pair (bf16, dropout off)."""

from ultra_hstu_plugin.host.stubs import stub_torchrec_if_missing

stub_torchrec_if_missing()
import torch  # noqa: E402

from ultra_hstu_plugin.host import HammerKernel, STULayer, STULayerConfig  # noqa: E402
from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer  # noqa: E402

cfg = STULayerConfig(embedding_dim=128, num_heads=2, hidden_dim=64, attention_dim=64,
                     output_dropout_ratio=0.0)  # fmt: skip
torch.manual_seed(0)
gr = STULayer(cfg).cuda().to(torch.bfloat16)
mods = {"gr": gr}
for gemm in ("cublas", "gr_triton"):
    m = UltraHSTULayer(cfg, k1=0, projection_gemm=gemm).cuda().to(torch.bfloat16)
    m.load_state_dict(gr.state_dict())
    mods[gemm] = m
lengths = torch.tensor([200, 77, 130], device="cuda")
offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
nt = torch.tensor([5, 0, 9], device="cuda")
x = torch.randn(int(lengths.sum()), 128, device="cuda", dtype=torch.bfloat16)
outs = {}
with torch.no_grad():
    for kernel in (HammerKernel.TRITON, HammerKernel.PYTORCH):
        for name, m in mods.items():
            if name == "gr" and kernel == HammerKernel.PYTORCH:
                continue  # GR's PyTorch attention needs fbgemm (absent on the GPU machine)
            m.set_hammer_kernel(kernel)
            y = m(x=x, x_lengths=lengths, x_offsets=offsets, max_seq_len=200, num_targets=nt)
            outs[f"{name}/{kernel.name}"] = (y - x).float()
# ours on PYTORCH equals GR on PYTORCH (integration_tests/test_parity_with_gr.py, CPU)
ref = outs["gr_triton/PYTORCH"]
for k, v in outs.items():
    print(k, "rel err vs ours/PYTORCH (= GR's PyTorch):", float((v - ref).norm() / ref.norm()))
