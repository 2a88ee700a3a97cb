"""FBGEMM's CPU TBE operator (fbgemm-gpu-cpu 1.8.0): the peer nobody here wrote.

One place builds the operator and runs a step on it, for the tolerance oracle
(``tests/test_golden_fbgemm.py``) and for the timing that a user would compare with
(``python -m refree.verif.bench_fbgemm``).  ``SplitTableBatchedEmbeddingBagsCodegen`` with
the tables on the host and CPU compute; EXACT_SGD or EXACT_ROWWISE_ADAGRAD; SUM or MEAN
pooling; the golden model's batch layout (TBE: table-major offsets) goes in as it is.

fbgemm-gpu-cpu 1.8.0 is the release built for torch 2.13.0; its wheel does not pin torch,
so the Makefile installs it with ``--no-deps``.  ``import fbgemm_gpu`` loads its kernels into
``torch.ops.fbgemm``.
"""
import warnings

import torch

with warnings.catch_warnings():
    # (the CPU wheel lacks the SSD optimizers' invokers and says so, once each, on import)
    warnings.filterwarnings("ignore", r"(?s).*Failed to import", DeprecationWarning)
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (ComputeDevice, EmbeddingLocation,
                                                                      PoolingMode)
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import SplitTableBatchedEmbeddingBagsCodegen

__all__ = ["OPTIMIZERS", "fbgemm_tbe", "fbgemm_step"]

OPTIMIZERS = {"sgd": EmbOptimType.EXACT_SGD, "rowwise-adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD}


def fbgemm_tbe(tables, state, pooling, optimizer, lr, eps):
    """The operator holding copies of ``tables`` (float32 (rows, D) each) and, under row-wise
    Adagrad, of ``state`` (one float32 per row, or None for zeros)."""
    specs = [(E.shape[0], E.shape[1], EmbeddingLocation.HOST, ComputeDevice.CPU) for E in tables]
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        specs, optimizer=OPTIMIZERS[optimizer], learning_rate=lr, eps=eps,
        pooling_mode=PoolingMode.SUM if pooling == "sum" else PoolingMode.MEAN)
    assert tbe.optimizer_args.weight_decay == 0 and not tbe.optimizer_args.gradient_clipping
    with torch.no_grad():
        for W, E in zip(tbe.split_embedding_weights(), tables):
            W.copy_(torch.from_numpy(E))
        if state is not None:
            for S, s in zip(tbe.split_optimizer_states(), state):
                S[0].copy_(torch.from_numpy(s))
    return tbe


def fbgemm_step(tbe, batch, grad, results=True):
    """Forward, backward (which updates in place); returns pooled, tables, state or None
    (``results=False``: nothing is copied out, for timing)."""
    w = None if batch.per_sample_weights is None else torch.from_numpy(batch.per_sample_weights)
    out = tbe(torch.from_numpy(batch.indices), torch.from_numpy(batch.offsets), w)
    out.backward(torch.from_numpy(grad))
    if not results:
        return None
    tables = [W.detach().numpy().copy() for W in tbe.split_embedding_weights()]
    state = (None if tbe.optimizer != EmbOptimType.EXACT_ROWWISE_ADAGRAD
             else [S[0].detach().numpy().copy() for S in tbe.split_optimizer_states()])
    return out.detach().numpy(), tables, state
