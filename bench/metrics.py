"""How well a method's sample selection finds the clean samples (the harness holds the truth)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def score_selection(prob: torch.Tensor | np.ndarray, is_noisy: np.ndarray, threshold: float = 0.5) -> dict:
    """Precision and recall of the selected-clean set (prob > threshold) and the AUC of prob for clean.

    precision: clean among selected; recall: selected among clean; auc: ranking quality of the clean
    probability, threshold-free (None when all samples are clean or all noisy).
    """
    # float64: a float32 copy would round probabilities near 1 to ties and understate the AUC
    p = prob.detach().double().cpu().numpy() if isinstance(prob, torch.Tensor) else np.asarray(prob, float)
    clean = ~np.asarray(is_noisy, dtype=bool)
    if p.shape != clean.shape:
        raise ValueError(f"clean_probability has shape {p.shape}, expected {clean.shape}")
    sel = p > threshold
    n_sel, n_clean = int(sel.sum()), int(clean.sum())
    tp = int((sel & clean).sum())
    auc = float(roc_auc_score(clean, p)) if 0 < n_clean < len(clean) and np.isfinite(p).all() else None
    return {"precision": tp / n_sel if n_sel else None, "recall": tp / n_clean if n_clean else None,
            "auc": auc, "selected_fraction": n_sel / len(p) if len(p) else None}


def transition_error(estimate: torch.Tensor | np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error over the C×C entries of a method's transition-matrix estimate against the noise
    generator's intended matrix (rows = clean class); the harness holds ``truth``, the method the estimate."""
    est = estimate.detach().double().cpu().numpy() if isinstance(estimate, torch.Tensor) else np.asarray(estimate, float)
    truth = np.asarray(truth, dtype=np.float64)
    if est.shape != truth.shape:
        raise ValueError(f"transition_estimate has shape {est.shape}, expected {truth.shape}")
    return float(np.abs(est - truth).mean())
