# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu retrieval-train``: GR's research ``train_fn`` on CPU (gloo) or GPU (NCCL).

GR's ``train_fn`` (``generative_recommenders/research/trainer/train.py``) hard-codes an
NCCL process group and ``device = rank`` (CUDA), so it cannot run on a CPU.  This runs its
steps in its order with GR's own pieces, reading the same ``train_fn.*`` gin bindings (a
gin file for GR's ``main.py`` runs here unchanged): GR's ``get_reco_dataset`` (through the
seam, so our datasets too) and ``create_data_loader``; ``LocalEmbeddingModule``, the
similarity function, GR's input preprocessor and output postprocessor;
``get_sequential_encoder`` (through the seam: SASRec, HSTU, ULTRA-HSTU); GR's
``SampledSoftmaxLoss`` / ``BCELoss``, ``InBatchNegativesSampler`` / ``LocalNegativesSampler``,
``get_weighted_loss``; AdamW with GR's betas and warm-up; GR's ``get_eval_state``,
``get_top_k_module`` and ``eval_metrics_v2_from_tensors`` (full-corpus ranking, seen items
filtered; corpora under GR's eval depth through :mod:`.candidates`), averaged with GR's
``_avg``.  What we supply: the process group and device
(:mod:`ultra_hstu_plugin.train.distributed`), progress lines, ``metrics.json`` /
``curves.jsonl`` / TensorBoard / the final checkpoint under ``ultra_hstu.RetrievalRun.
output_dir`` (GR writes ``./exps`` and ``./ckpts``).

Validation and stopping (ours; ``ultra_hstu.RetrievalRun.*``, off by default, so GR's loop
is what runs unless asked): ``validation = True`` is the SASRec protocol's leave-one-out
split: training drops each user's last *two* items, the per-epoch eval (always over every
user) predicts the second-to-last item from the items before it, and the test split is
GR's eval split (the last item from everything before it, the validation item included);
both evals are GR's own code on GR's ``DatasetV2`` with one more item left out
(:func:`ultra_hstu_plugin.host.dataset_without_last_n`).  ``early_stopping_patience = P``
stops after P epochs without a better validation ``early_stopping_metric`` (default
``ndcg@10``); ``max_train_seconds`` stops when the run's wall time (training and evals)
passes it, after evaluating the epoch it stopped in; the clock starts once the first step is
done, so Triton's first-use autotuning (minutes for a cold cache, seconds for a warm one) does
not eat into the budget of some runs and not others (``summary["first_step_seconds"]``).  The weights of
the best validation epoch are kept (a copy in memory) and the test metrics reported are
theirs (``summary["test"]``, also ``summary["eval"]``); without validation ``eval`` is the
last epoch's, as in GR.

Differences from GR's loop, on purpose: no ``torch.autograd.set_detect_anomaly(True)``
(GR turns on autograd's anomaly mode, a debugging aid that slows every step); the eval GR
runs every ``eval_interval`` steps on the current *training* batch is not run (the
per-epoch eval over the eval split is); torch's generator is seeded too (GR seeds only
Python's ``random``); checkpoints only at the end and every ``save_ckpt_every_n`` epochs.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gin
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ultra_hstu_plugin.autotune import bound_autotuning, check_settings, finish_autotuning
from ultra_hstu_plugin.host import (
    BCELoss,
    InBatchNegativesSampler,
    L2NormEmbeddingPostprocessor,
    LayerNormEmbeddingPostprocessor,
    LearnablePositionalEmbeddingInputFeaturesPreprocessor,
    LocalEmbeddingModule,
    LocalNegativesSampler,
    SampledSoftmaxLoss,
    configurable_defaults,
    create_data_loader,
    dataset_without_last_n,
    eval_metrics_v2_from_tensors,
    get_eval_state,
    get_similarity_function,
    get_top_k_module,
    get_weighted_loss,
    ignored_last_n,
    item_embedding_table,
    movielens_seq_features_from_row,
    research_avg,
    research_train_fn,
    set_sampler_item_table,
    trainer_get_reco_dataset,
    trainer_get_sequential_encoder,
)
from ultra_hstu_plugin.kernels.autotune_budget import summary as autotune_summary
from ultra_hstu_plugin.retrieval.candidates import for_small_corpora
from ultra_hstu_plugin.train.distributed import cleanup, free_port, init_distributed

logger = logging.getLogger(__name__)
REPORTED = ("ndcg@10", "ndcg@50", "hr@10", "hr@50", "mrr")


@gin.configurable(module="ultra_hstu")
@dataclass(frozen=True)
class RetrievalRun:
    """Our settings of a retrieval run (``ultra_hstu.RetrievalRun.*``); the model and the
    training are GR's ``train_fn.*`` bindings."""

    output_dir: str = "runs/retrieval"
    device: str = "cpu"  # "cpu" (gloo) or "cuda" (NCCL); --device is its shorthand
    save_checkpoint: bool = True
    # leave-one-out validation: train without the last two items, validate on the
    # second-to-last, test on the last (at the best validation epoch)
    validation: bool = False
    early_stopping_patience: int = 0  # epochs without a better validation metric; 0: off
    early_stopping_metric: str = "ndcg@10"  # one of REPORTED
    max_train_seconds: float = 0.0  # wall-time cap of the run (train + evals); 0: none
    # a progress line (epoch, step, loss, steps/s) at most this often; GR's own train-loss
    # line comes every train_fn.eval_interval steps, which can be epochs apart; 0: off
    progress_every_seconds: float = 30.0
    # Triton autotuning on CUDA, as RunSettings' fields of the ranking path
    # (ultra_hstu_plugin/autotune.py): the bound, the known-config table, a table to record.
    autotune_max_configs: Optional[int] = 4
    autotune_table: Optional[str] = "auto"
    autotune_record: Optional[str] = None

    def __post_init__(self) -> None:
        if self.early_stopping_metric not in REPORTED:
            raise ValueError(
                f"ultra_hstu.RetrievalRun.early_stopping_metric must be one of "
                f"{', '.join(REPORTED)}, got {self.early_stopping_metric!r}"
            )
        if self.early_stopping_patience < 0 or self.max_train_seconds < 0:
            raise ValueError(
                "ultra_hstu.RetrievalRun.early_stopping_patience and max_train_seconds must be >= 0"
            )
        if self.progress_every_seconds < 0:
            raise ValueError(
                "ultra_hstu.RetrievalRun.progress_every_seconds must be >= 0 (0: off), got "
                f"{self.progress_every_seconds}"
            )
        check_settings(
            "ultra_hstu.RetrievalRun",
            self.autotune_max_configs,
            self.autotune_table,
            self.autotune_record,
        )
        if self.early_stopping_patience and not self.validation:
            raise ValueError(
                "ultra_hstu.RetrievalRun.early_stopping_patience needs "
                "ultra_hstu.RetrievalRun.validation = True (stopping on the eval split "
                "would select the epoch on the test items)"
            )


def splits(
    dataset: Any, validation: bool
) -> Tuple[torch.utils.data.Dataset, Optional[torch.utils.data.Dataset], torch.utils.data.Dataset]:
    """(train, validation or None, test) splits of GR's ``RecoDataset``.

    Without validation: GR's train and eval splits.  With it: each of GR's splits with one
    more item of every user left out for train and validation; test is GR's eval split.
    """
    train, test = dataset.train_dataset, dataset.eval_dataset
    if not validation:
        return train, None, test
    train, val = dataset_without_last_n(train, 1), dataset_without_last_n(test, 1)
    if not ignored_last_n(train) == ignored_last_n(val) + 1 == ignored_last_n(test) + 2:
        raise ValueError(
            f"validation split needs GR's train split to leave out one item more than its "
            f"eval split; got ignore_last_n {ignored_last_n(dataset.train_dataset)} and "
            f"{ignored_last_n(test)}"
        )
    return train, val, test


# Bindings each main module reads besides train_fn's; the others' are errors (ignored).
MODEL_BINDINGS = {
    "SASRec": ("sasrec_encoder",),
    "HSTU": ("hstu_encoder",),
    "ULTRA-HSTU": (
        "hstu_encoder",
        "ultra_hstu.UltraHSTUEncoderConfig",
        "ultra_hstu.ultra_hstu_encoder",
    ),
}


def train_fn_settings() -> Dict[str, Any]:
    """GR's ``train_fn`` keyword arguments as gin resolves them (bindings over defaults).

    Bindings of another main module's encoder would be silently ignored: an error.
    """
    p = {**configurable_defaults(research_train_fn), **gin.get_bindings(research_train_fn)}
    main = p["main_module"]
    if main in MODEL_BINDINGS:
        for selector in sorted({s for v in MODEL_BINDINGS.values() for s in v}):
            if selector not in MODEL_BINDINGS[main] and gin.get_bindings(selector):
                names = ", ".join(f"{selector}.{k}" for k in sorted(gin.get_bindings(selector)))
                raise ValueError(
                    f"{names} bound, but train_fn.main_module = {main!r} does not read "
                    f"{selector}; it reads {', '.join(MODEL_BINDINGS[main])}"
                )
    return p


def _say(msg: str) -> None:
    print(msg, flush=True)


def _build(p: Dict[str, Any], dataset: Any, device: torch.device):
    """train_fn's model, loss and negatives sampler (its order, its debug strings)."""
    if p["embedding_module_type"] != "local":
        raise ValueError(f"Unknown embedding_module_type {p['embedding_module_type']}")
    d = p["item_embedding_dim"]
    embedding_module = LocalEmbeddingModule(num_items=dataset.max_item_id, item_embedding_dim=d)
    interaction_module, _ = get_similarity_function(
        module_type=p["interaction_module_type"], query_embedding_dim=d, item_embedding_dim=d
    )
    norm = p["user_embedding_norm"]
    if norm not in ("l2_norm", "layer_norm"):
        raise ValueError(
            f"train_fn.user_embedding_norm must be l2_norm or layer_norm, got {norm!r}"
        )
    post = (L2NormEmbeddingPostprocessor if norm == "l2_norm" else LayerNormEmbeddingPostprocessor)(
        embedding_dim=d, eps=1e-6
    )
    out_len = p["gr_output_length"] + 1
    pre = LearnablePositionalEmbeddingInputFeaturesPreprocessor(
        max_sequence_len=dataset.max_sequence_length + out_len,
        embedding_dim=d,
        dropout_rate=p["dropout_rate"],
    )
    model = trainer_get_sequential_encoder()(
        module_type=p["main_module"],
        max_sequence_length=dataset.max_sequence_length,
        max_output_length=out_len,
        embedding_module=embedding_module,
        interaction_module=interaction_module,
        input_preproc_module=pre,
        output_postproc_module=post,
        verbose=False,
    )
    if p["loss_module"] == "BCELoss":
        if p["temperature"] != 1.0:
            raise ValueError("train_fn.loss_module = 'BCELoss' needs train_fn.temperature = 1.0")
        loss = BCELoss(temperature=p["temperature"], model=model)
    elif p["loss_module"] == "SampledSoftmaxLoss":
        loss = SampledSoftmaxLoss(
            num_to_sample=p["num_negatives"],
            softmax_temperature=p["temperature"],
            model=model,
            activation_checkpoint=p["loss_activation_checkpoint"],
        )
    else:
        raise ValueError(f"Unrecognized loss module {p['loss_module']}.")
    if p["sampling_strategy"] == "in-batch":
        sampler = InBatchNegativesSampler(
            l2_norm=p["item_l2_norm"], l2_norm_eps=p["l2_norm_eps"], dedup_embeddings=True
        )
    elif p["sampling_strategy"] == "local":
        sampler = LocalNegativesSampler(
            num_items=dataset.max_item_id,
            item_emb=item_embedding_table(model),
            all_item_ids=dataset.all_item_ids,
            l2_norm=p["item_l2_norm"],
            l2_norm_eps=p["l2_norm_eps"],
        )
    else:
        raise ValueError(f"Unrecognized sampling strategy {p['sampling_strategy']}.")
    if p["main_module_bf16"]:
        model = model.to(torch.bfloat16)
    return model.to(device), loss.to(device), sampler.to(device)


def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    loader: Any,
    sampler: torch.nn.Module,
    p: Dict[str, Any],
    device: torch.device,
    world_size: int,
    max_batches: Optional[int] = None,
) -> Dict[str, float]:
    """train_fn's per-epoch eval: full-corpus ranking of each user's held-out last item."""
    dtype = torch.bfloat16 if p["main_module_bf16"] else None
    model.eval()
    state = for_small_corpora(
        get_eval_state(
            model=model,
            all_item_ids=dataset.all_item_ids,
            negatives_sampler=sampler,
            top_k_module_fn=lambda emb, ids: get_top_k_module(
                top_k_method=p["top_k_method"], model=model, item_embeddings=emb, item_ids=ids
            ),
            device=device,
            float_dtype=dtype,
        )
    )
    values: Dict[str, List[torch.Tensor]] = {}
    for i, row in enumerate(loader):
        seq, target_ids, target_ratings = movielens_seq_features_from_row(
            row, device=device, max_output_length=p["gr_output_length"] + 1
        )
        out = eval_metrics_v2_from_tensors(
            state,
            model,
            seq,
            target_ids=target_ids,
            target_ratings=target_ratings,
            user_max_batch_size=p["eval_user_max_batch_size"],
            dtype=dtype,
        )
        for k in REPORTED:
            values.setdefault(k, []).append(out[k].float())
        if max_batches is not None and i + 1 >= max_batches:
            break
    model.train()
    return {
        k: float(research_avg(torch.cat(v, dim=-1), world_size=world_size))
        for k, v in values.items()
    }


def _metrics_line(m: Dict[str, float]) -> str:
    return ", ".join(f"{k.upper().replace('NDCG', 'NDCG')} {m[k]:.4f}" for k in REPORTED if k in m)


def train(settings: RetrievalRun, rank: int = 0, world_size: int = 1) -> Dict[str, Any]:
    """One process of the run (gin already parsed); returns the summary rank 0 writes."""
    p = train_fn_settings()
    random.seed(p["random_seed"])
    torch.manual_seed(p["random_seed"])
    ctx = init_distributed(settings.device, rank, world_size, free_port())
    try:
        return _train(settings, p, ctx)
    finally:
        cleanup()


def _any_rank(flag: bool, device: torch.device, world_size: int) -> bool:
    """``flag`` on any rank (the ranks must stop together)."""
    if world_size == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _train(settings: RetrievalRun, p: Dict[str, Any], ctx: Any) -> Dict[str, Any]:
    device, world_size = ctx.device, ctx.world_size
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = p["enable_tf32"]
        torch.backends.cudnn.allow_tf32 = p["enable_tf32"]
        # after the TF32 flag: a table is used only for the setting it was recorded with
        bounded = bound_autotuning(settings.autotune_max_configs, settings.autotune_table)
        logger.info("Triton autotuning: %s", autotune_summary(bounded))
    dataset = trainer_get_reco_dataset()(
        dataset_name=p["dataset_name"],
        max_sequence_length=p["max_sequence_length"],
        chronological=True,
        positional_sampling_ratio=p["positional_sampling_ratio"],
    )
    train_split, val_split, test_split = splits(dataset, settings.validation)
    train_sampler, train_loader = create_data_loader(
        train_split,
        batch_size=p["local_batch_size"],
        world_size=world_size,
        rank=ctx.rank,
        shuffle=True,
        drop_last=world_size > 1,
    )
    eval_sampler, eval_loader = create_data_loader(
        test_split,
        batch_size=p["eval_batch_size"],
        world_size=world_size,
        rank=ctx.rank,
        shuffle=True,  # GR's choice: partial evals see a random subset
        drop_last=world_size > 1,
    )
    val_sampler, val_loader = None, None
    if val_split is not None:
        val_sampler, val_loader = create_data_loader(
            val_split,
            batch_size=p["eval_batch_size"],
            world_size=world_size,
            rank=ctx.rank,
            shuffle=True,  # shards over ranks (GR shards only shuffled loaders)
            drop_last=world_size > 1,
        )
    model, ar_loss, sampler = _build(p, dataset, device)
    module = model
    n_params = sum(t.numel() for t in module.parameters())
    model = DDP(
        model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
    )
    opt = torch.optim.AdamW(
        model.parameters(), lr=p["learning_rate"], betas=(0.9, 0.98), weight_decay=p["weight_decay"]
    )
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank0 = ctx.rank == 0
    writer = None
    if rank0:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        except ImportError as e:  # tensorboard not installed: curves.jsonl still has it all
            _say(f"no TensorBoard log ({e}); curves.jsonl and metrics.json are written")
        _say(
            f"retrieval: {module.debug_str()} on {p['dataset_name']} ({len(dataset.train_dataset)} "
            f"users, {dataset.max_item_id} items), {n_params} parameters, {device.type} "
            f"x{world_size}, {p['num_epochs']} epoch(s) of {len(train_loader)} steps"
        )
        if settings.validation:
            _say(
                f"  validation: leave-one-out (train without each user's last 2 items, "
                f"validate on the 2nd-to-last, test on the last at the best validation "
                f"epoch); early stopping on {settings.early_stopping_metric}, patience "
                f"{settings.early_stopping_patience or 'off'}; max_train_seconds "
                f"{settings.max_train_seconds or 'none'}"
            )
    curves = (out / "curves.jsonl").open("w") if rank0 else None
    history: List[Dict[str, Any]] = []
    lr_base = p["learning_rate"]
    step = 0
    start = time.time()
    clock = start  # max_train_seconds counts from the end of the first step
    first_step_seconds: Optional[float] = None
    last_loss = float("nan")
    out_len = p["gr_output_length"] + 1
    metric = settings.early_stopping_metric
    best_point: Optional[Dict[str, Any]] = None
    best_state: Optional[Dict[str, torch.Tensor]] = None
    since_best = 0
    stop_reason = "num_epochs"
    last_progress = start
    for epoch in range(p["num_epochs"]):
        for s in (train_sampler, eval_sampler, val_sampler):
            if s is not None:
                s.set_epoch(epoch)
        model.train()
        epoch_start, losses = time.time(), []
        out_of_time = False
        for row in train_loader:
            seq, target_ids, _ = movielens_seq_features_from_row(
                row, device=device, max_output_length=out_len
            )
            seq.past_ids.scatter_(
                dim=1, index=seq.past_lengths.view(-1, 1), src=target_ids.view(-1, 1)
            )
            opt.zero_grad()
            input_embeddings = module.get_item_embeddings(seq.past_ids)
            seq_embeddings = model(
                past_lengths=seq.past_lengths,
                past_ids=seq.past_ids,
                past_embeddings=input_embeddings,
                past_payloads=seq.past_payloads,
            )
            supervision_ids = seq.past_ids
            if p["sampling_strategy"] == "in-batch":
                ids = supervision_ids.view(-1)
                sampler.process_batch(
                    ids=ids, presences=(ids != 0), embeddings=module.get_item_embeddings(ids)
                )
            else:
                set_sampler_item_table(sampler, item_embedding_table(module))
            ar_mask = supervision_ids[:, 1:] != 0
            loss, aux_losses = ar_loss(
                lengths=seq.past_lengths,
                output_embeddings=seq_embeddings[:, :-1, :],
                supervision_ids=supervision_ids[:, 1:],
                supervision_embeddings=input_embeddings[:, 1:, :],
                supervision_weights=ar_mask.float(),
                negatives_sampler=sampler,
                **seq.past_payloads,
            )
            loss = get_weighted_loss(loss, aux_losses, weights=p["loss_weights"] or {})
            loss.backward()
            if step < p["num_warmup_steps"]:
                for pg in opt.param_groups:
                    pg["lr"] = min(1.0, (step + 1) / p["num_warmup_steps"]) * lr_base
            opt.step()
            last_loss = float(loss.detach())
            losses.append(last_loss)
            if writer is not None:
                writer.add_scalar("losses/ar_loss", last_loss, step)
            step += 1
            if step == 1:  # autotuning and lazy initialisation happen in this one
                clock = time.time()
                first_step_seconds = round(clock - start, 2)
            if rank0 and step % p["eval_interval"] == 0:  # GR's train-loss log cadence
                _say(f"  step {step}: train loss {last_loss:.4f}")
                last_progress = time.time()
            elif (
                rank0
                and settings.progress_every_seconds
                and time.time() - last_progress >= settings.progress_every_seconds
            ):
                last_progress = time.time()
                rate = len(losses) / max(last_progress - epoch_start, 1e-9)
                _say(
                    f"  epoch {epoch} step {len(losses)}/{len(train_loader)}: train loss "
                    f"{last_loss:.4f}, {rate:.2f} steps/s"
                )
            if (
                settings.max_train_seconds
                and step > 1  # the same on every rank: the all-reduce stays collective
                and _any_rank(time.time() - clock > settings.max_train_seconds, device, world_size)
            ):
                out_of_time = True
                break
        train_seconds = time.time() - epoch_start
        # validation: every user each epoch (a partial eval would make the choice noisy)
        full = val_loader is not None or epoch % p["full_eval_every_n"] == 0
        eval_start = time.time()
        metrics = evaluate(
            module,
            dataset,
            val_loader if val_loader is not None else eval_loader,
            sampler,
            p,
            device,
            world_size,
            max_batches=None if full else p["partial_eval_num_iters"],
        )
        point = {
            "epoch": epoch,
            "step": step,
            "split": "validation" if val_loader is not None else "eval",
            "train_loss": sum(losses) / max(len(losses), 1),
            "full_eval": full,
            "train_seconds": round(train_seconds, 2),
            "eval_seconds": round(time.time() - eval_start, 2),
            **metrics,
        }
        history.append(point)
        improved = best_point is None or metrics[metric] > best_point[metric]
        if improved:
            best_point, since_best = point, 0
            if val_loader is not None:  # the weights the test split is ranked with
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            since_best += 1
        if rank0:
            for k, v in metrics.items():
                if writer is not None:
                    writer.add_scalar(f"eval_epoch/{k}", v, epoch)
            curves.write(json.dumps(point) + "\n")
            curves.flush()
            label = "validation" if val_loader is not None else "eval"
            mark = " (best)" if improved else f" (best epoch {best_point['epoch'] + 1})"
            _say(
                f"epoch {epoch + 1}/{p['num_epochs']}: train loss {point['train_loss']:.4f} "
                f"({train_seconds:.1f} s, {time.time() - start:.0f} s in all); "
                f"{label}{'' if full else ' (partial)'} " + _metrics_line(metrics) + mark
            )
            every = p["save_ckpt_every_n"]
            if settings.save_checkpoint and epoch > 0 and every and epoch % every == 0:
                _save(out, model, opt, epoch)
        if out_of_time:
            stop_reason = "max_train_seconds"
            break
        patience = settings.early_stopping_patience
        if patience and since_best >= patience:
            stop_reason = "early_stopping"
            break
    if rank0 and stop_reason != "num_epochs":
        why = (
            f"no better validation {metric} in {settings.early_stopping_patience} epoch(s)"
            if stop_reason == "early_stopping"
            else f"max_train_seconds {settings.max_train_seconds:g} passed"
        )
        _say(f"stopped after epoch {len(history)}: {why}")
    test_point: Dict[str, Any] = {}
    if val_loader is not None and best_point is not None:
        module.load_state_dict(best_state)
        test_point = {
            "epoch": best_point["epoch"],
            "step": best_point["step"],
            "split": "test",
            "full_eval": True,
            **evaluate(module, dataset, eval_loader, sampler, p, device, world_size),
        }
        if rank0:
            _say(
                f"test at the best validation epoch ({best_point['epoch'] + 1}, "
                f"{metric} {best_point[metric]:.4f}): " + _metrics_line(test_point)
            )
    summary: Dict[str, Any] = {
        "dataset": p["dataset_name"],
        "main_module": p["main_module"],
        "model": module.debug_str(),
        "device": device.type,
        "world_size": world_size,
        "parameters": n_params,
        "epochs": p["num_epochs"],
        "epochs_run": len(history),
        "steps": step,
        "train_loss": last_loss,
        "seconds": round(time.time() - start, 1),
        "first_step_seconds": first_step_seconds,
        "stop_reason": stop_reason,
        "random_seed": p["random_seed"],
        "eval": test_point or (history[-1] if history else {}),
        "output_dir": str(out),
    }
    if device.type == "cuda":
        lines = finish_autotuning(settings.autotune_record if rank0 else None, " ".join(sys.argv))
        summary["autotune"] = lines[0]
        for line in lines:
            logger.info(line)
    if val_loader is not None:
        summary.update(
            validation=best_point or {},
            test=test_point,
            best_epoch=best_point["epoch"] if best_point else None,
            early_stopping_metric=metric,
            early_stopping_patience=settings.early_stopping_patience,
        )
    if rank0:
        if settings.save_checkpoint and history:
            # with validation: the best validation epoch's weights (loaded for the test)
            last = best_point["epoch"] if test_point else history[-1]["epoch"]
            summary["checkpoint"] = str(_save(out, model, opt, last))
        if writer is not None:
            writer.flush()
            writer.close()
        curves.close()
        (out / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _save(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int) -> Path:
    path = out / "checkpoints" / f"ep{epoch}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "epoch": epoch,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": opt.state_dict(),
        },
        path,
    )
    return path


def load_config(gin_files: Sequence[str], gin_bindings: Sequence[str] = ()) -> RetrievalRun:
    """Clear gin and parse a retrieval run's files; returns its :class:`RetrievalRun`."""
    import os

    import ultra_hstu_plugin.retrieval.gin  # noqa: F401 - registrations and the seam
    from ultra_hstu_plugin.config import add_gin_search_paths

    for f in gin_files:
        if not os.path.exists(f):
            raise FileNotFoundError(f"gin file {f} does not exist")
    gin.clear_config()
    add_gin_search_paths(gin_files)
    gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings))
    settings = gin.get_configurable(RetrievalRun)()
    if settings.device not in ("cpu", "cuda"):
        raise ValueError(
            f"ultra_hstu.RetrievalRun.device (--device) must be cpu or cuda, got {settings.device!r}"
        )
    return settings


def run(
    gin_files: Sequence[str], gin_bindings: Sequence[str] = (), device: Optional[str] = None
) -> Dict[str, Any]:
    """``ultra-hstu retrieval-train``: parse, then train in this process (world size 1)."""
    bindings = list(gin_bindings)
    settings = load_config(gin_files, bindings)
    if device is not None:
        bound = gin.get_bindings(RetrievalRun).get("device")
        if bound is not None and bound != device:
            raise ValueError(
                f"--device {device} conflicts with the gin binding "
                f"ultra_hstu.RetrievalRun.device = {bound!r}; drop one of them"
            )
        settings = load_config(
            gin_files, [*bindings, f"ultra_hstu.RetrievalRun.device = '{device}'"]
        )
    return train(settings)
