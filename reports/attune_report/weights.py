"""Attention-weight heatmaps: a [batch, heads, seq_q, seq_kv] float .npy (what `attune run
--weights` is to write) drawn one panel per head, queries down and keys across."""
import os

import numpy as np

from .bench import ReportError

MAX_BATCHES = 8       # figures per run unless --batch picks others
MAX_TICK_LABELS = 48  # longer label lists are thinned to about this many ticks


def load_weights(path):
    """The array as 4-D [batch, heads, seq_q, seq_kv] (2-D and 3-D inputs gain leading axes)."""
    try:
        w = np.load(path, allow_pickle=False)
    except OSError as e:
        raise ReportError("cannot read weights %s: %s" % (path, e.strerror or e))
    except (ValueError, EOFError) as e:
        raise ReportError("weights %s is not a valid .npy file: %s" % (path, str(e) or "no data"))
    if not isinstance(w, np.ndarray):
        w.close()
        raise ReportError("weights %s is an .npz archive, not one .npy array" % path)
    if w.dtype.kind != "f":
        raise ReportError("weights %s holds %s, not float32" % (path, w.dtype))
    if not 2 <= w.ndim <= 4:
        raise ReportError("weights %s has shape %s; expected [batch, heads, seq_q, seq_kv]" % (path, list(w.shape)))
    if w.size == 0:
        raise ReportError("weights %s is empty (shape %s)" % (path, list(w.shape)))
    return w.reshape((1,) * (4 - w.ndim) + w.shape)


def load_labels(path, seq_q, seq_kv):
    """(query labels, key labels) from a text file with one token per line: seq_kv lines (the
    queries are the last seq_q of them, as causal attention aligns the last query with the last
    key) or seq_q + seq_kv lines (queries first, then keys)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ReportError("cannot read labels %s: %s" % (path, e.strerror or e))
    except UnicodeDecodeError as e:
        raise ReportError("labels %s is not UTF-8 text (byte %d)" % (path, e.start))
    if len(lines) == seq_kv:
        return (lines[seq_kv - seq_q:] if seq_q <= seq_kv else None), lines
    if len(lines) == seq_q + seq_kv:
        return lines[:seq_q], lines[seq_q:]
    raise ReportError("labels %s has %d lines; expected seq_kv (%d) or seq_q + seq_kv (%d)"
                      % (path, len(lines), seq_kv, seq_q + seq_kv))


def check_indices(indices, limit, what):
    bad = [i for i in indices if not 0 <= i < limit]
    if bad:
        raise ReportError("%s %d is out of range: the weights have %d" % (what, bad[0], limit))
    return indices


def info_rows(path, w):
    sums = w.astype(np.float64).sum(axis=-1)
    seen = sums[sums > 0]  # a query that sees no key has an all-zero row
    return [["file", path], ["shape [batch, heads, seq_q, seq_kv]", str(list(w.shape))], ["dtype", str(w.dtype)],
            ["min / max", "%.4g / %.4g" % (np.nanmin(w), np.nanmax(w))],
            ["max |row sum - 1| (softmax rows)", "%.3g" % np.max(np.abs(seen - 1)) if seen.size else "no nonzero rows"]]


def _ticks(ax, labels, axis):
    n = len(labels)
    idx = list(range(n)) if n <= MAX_TICK_LABELS else sorted(set(np.linspace(0, n - 1, MAX_TICK_LABELS).round()
                                                                 .astype(int).tolist()))
    if axis == "x":
        ax.set_xticks(idx, [labels[i] for i in idx], rotation=90, fontsize=7)
    else:
        ax.set_yticks(idx, [labels[i] for i in idx], fontsize=7)


def draw(w, out_dir, source, batches, heads, labels=None):
    """One PNG per batch element, a panel per head on a shared colour scale; returns [Figure]."""
    from .plots import Figure, _save, plt  # matplotlib only once the inputs are known to be good

    _, _, seq_q, seq_kv = w.shape
    q_labels, k_labels = labels if labels else (None, None)
    ncols = min(4, len(heads))
    nrows = -(-len(heads) // ncols)
    side = 3.4 if not labels else max(3.4, 0.14 * min(max(seq_q, seq_kv), MAX_TICK_LABELS))
    figs = []
    for b in batches:
        block = w[b][heads]
        vmin, vmax = min(0.0, float(np.nanmin(block))), float(np.nanmax(block))
        fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 + side * ncols, 0.9 + side * nrows * min(1.0, max(
            0.25, seq_q / seq_kv))), squeeze=False)
        for k, h in enumerate(heads):
            ax = axes[k // ncols][k % ncols]
            im = ax.imshow(w[b, h], cmap="viridis", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1,
                           aspect="auto", interpolation="nearest")
            ax.set_title("head %d" % h, fontsize=10)
            if k_labels:
                _ticks(ax, k_labels, "x")
            if q_labels and k % ncols == 0:
                _ticks(ax, q_labels, "y")
            elif q_labels:
                ax.set_yticks([])  # the same queries as the first panel of the row
            if k // ncols == nrows - 1 or k + ncols >= len(heads):
                ax.set_xlabel("keys")
            if k % ncols == 0:
                ax.set_ylabel("queries")
        for k in range(len(heads), nrows * ncols):
            axes[k // ncols][k % ncols].set_visible(False)
        fig.colorbar(im, ax=axes.ravel().tolist(), label="attention weight", shrink=0.85)
        fig.suptitle("%s, batch %d: %d head%s, %d queries x %d keys" % (
            os.path.basename(source), b, len(heads), "" if len(heads) == 1 else "s", seq_q, seq_kv))
        name = "weights_b%d.png" % b
        _save(fig, out_dir, name)
        figs.append(Figure(name, "Batch %d" % b, "Softmax weights per head: row i is query i, column j key j."))
    return figs
