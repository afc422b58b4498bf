# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""INT4 embedding tables keep eval NE: train -> ``ultra-hstu quantize --int4`` -> evaluate both.

The MovieLens-100k CPU smoke model is trained through the CLI (GR's loops, sharded with
torchrec, GR's DCP checkpoint), quantized through the CLI, and then the float model
(loaded unsharded from the checkpoint) and the INT4-embedding model (rebuilt from the
quantize artifact) run GR's ``eval_loop`` with GR's ``MetricsLogger`` on the same eval split.
"""

import json

import gin
import pytest
import torch

from .conftest import TEST_DEVICE, run_cli

SMOKE = "gin_configs/ml100k_smoke_cpu.gin"
STEPS = 150
BATCH = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ml100k_dir):
    out = tmp_path_factory.mktemp("int4") / "run"
    data = f"make_dataloaders.data_dir='{ml100k_dir}'"
    res = run_cli(
        "train",
        "--gin",
        SMOKE,
        "--device",
        TEST_DEVICE,  # quantizing and both evals run on the CPU
        "--gin-param",
        data,
        "--gin-param",
        f"RunSettings.output_dir='{out}'",
        "--gin-param",
        f"train_loop.num_batches={STEPS}",
        "--gin-param",
        "make_dataloaders.progress=False",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == STEPS
    quantized = out.parent / "int4_model"
    res = run_cli(
        "quantize",
        "--gin",
        SMOKE,
        "--gin-param",
        data,
        "--checkpoint",
        metrics["checkpoint"],
        "--int4",
        "--out",
        str(quantized),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return metrics, quantized


@pytest.fixture
def one_process_group():
    # GR's samplers ask torch.distributed for the world size even in one process.
    from ultra_hstu_plugin.train.distributed import cleanup, free_port, init_distributed

    init_distributed("cpu", 0, 1, free_port())
    yield
    cleanup()
    gin.clear_config()


def _eval_ne(model, hstu_config, data_dir, tb_dir, device: str = "cpu") -> float:
    from ultra_hstu_plugin.config import RunSettings
    from ultra_hstu_plugin.host import MetricsLogger, eval_loop
    from ultra_hstu_plugin.train.dataloaders import make_dataloaders

    _, eval_dl = make_dataloaders(
        hstu_config=hstu_config,
        settings=RunSettings(dataset="movielens-100k", batch_size=BATCH),
        data_dir=str(data_dir),
        progress=False,
    )
    metrics = MetricsLogger(
        multitask_configs=hstu_config.multitask_configs,
        batch_size=BATCH,
        window_size=1000,
        device=torch.device(device),
        rank=0,
        tensorboard_log_path=str(tb_dir),  # GR's eval_loop logs there
    )
    eval_loop(rank=0, model=model, dataloader=eval_dl, metric_logger=metrics, device=device)
    return float(metrics.compute(mode="eval")["metric/lifetime_ne/rating"])


@pytest.mark.gpu
def test_int4_embeddings_keep_eval_ne_within_half_a_percent(
    trained, ml100k_dir, one_process_group, tmp_path
):
    from ultra_hstu_plugin.quant import int4_embeddings as q

    metrics, quantized = trained
    data = [f"make_dataloaders.data_dir='{ml100k_dir}'"]
    model, hstu_config, _ = q.load_model_from_checkpoint([SMOKE], metrics["checkpoint"], data)
    gin.clear_config()
    float_ne = _eval_ne(model, hstu_config, ml100k_dir, tmp_path / "tb_float")
    # The unsharded float model is the trained model: same NE as the launcher's own eval
    # (on CUDA that eval ran Triton kernels, here the CPU reference ops: float rounding).
    rel = 1e-6 if TEST_DEVICE == "cpu" else 2e-3
    assert float_ne == pytest.approx(metrics["eval"]["metric/lifetime_ne/rating"], rel=rel)

    int4_model, int4_config = q.load_quantized_model(str(quantized))
    gin.clear_config()
    ec = q.model_embedding_collection(int4_model)
    assert type(ec).__module__ == "torchrec.quant.embedding_modules"
    assert {t.data_type.name for t in ec.embedding_configs()} == {"INT4"}
    int4_ne = _eval_ne(int4_model, int4_config, ml100k_dir, tmp_path / "tb_int4")

    print(f"eval NE float={float_ne:.6f} int4={int4_ne:.6f} rel={int4_ne / float_ne - 1:+.4%}")
    assert float_ne < 1.0  # trained past the constant predictor, so NE is informative
    assert abs(int4_ne - float_ne) / float_ne < 0.005

    manifest = json.loads((quantized / "manifest.json").read_text())
    assert manifest["quantized_table_bytes"] == q.table_bytes(ec)
    # ML-100k smoke tables are 32 wide: 16 code bytes + 4 scale/bias bytes vs 64 in fp16
    assert manifest["fp16_table_bytes"] / manifest["quantized_table_bytes"] == pytest.approx(3.2)


def _fbgemm_has_cuda_int4_lookup() -> bool:
    if not torch.cuda.is_available():
        return False
    from ultra_hstu_plugin.bench.int4_embedding import gpu_status

    return bool(gpu_status()["run"])


@pytest.mark.gpu
@pytest.mark.skipif(
    not _fbgemm_has_cuda_int4_lookup(),
    reason="needs a CUDA device and fbgemm's CUDA int-n-bit TBE (the GPU machine's stack)",
)
def test_int4_on_cuda_through_fbgemm_keeps_eval_ne(
    trained, ml100k_dir, one_process_group, tmp_path
):
    """The float model and its INT4 twin, both evaluated on CUDA: the INT4 lookups run
    fbgemm's CUDA int-n-bit TBE (16-byte aligned rows), the rest of the model GR's layers."""
    from ultra_hstu_plugin import host
    from ultra_hstu_plugin.quant import int4_embeddings as q

    metrics, _ = trained
    data = [f"make_dataloaders.data_dir='{ml100k_dir}'"]
    model, hstu_config, _ = q.load_model_from_checkpoint([SMOKE], metrics["checkpoint"], data)
    gin.clear_config()
    model = model.to("cuda")
    float_ne = _eval_ne(model, hstu_config, ml100k_dir, tmp_path / "tb_float", device="cuda")

    q.quantize_model_embeddings(model, bits=4)
    ec = host.embedding_collection_of(model)
    assert type(ec).__module__ == "torchrec.quant.embedding_modules"
    tbe = q.trec.tbe_modules(ec)[0]
    assert tbe.current_device.type == "cuda"  # fbgemm's CUDA kernels, not the CPU ones
    assert ec.row_alignment == q.CUDA_ROW_ALIGNMENT
    int4_ne = _eval_ne(model, hstu_config, ml100k_dir, tmp_path / "tb_int4", device="cuda")

    print(f"CUDA eval NE float={float_ne:.6f} int4={int4_ne:.6f} rel={int4_ne / float_ne - 1:+.4%}")
    assert float_ne < 1.0
    assert abs(int4_ne - float_ne) / float_ne < 0.005
