"""The model (frozen): embeddings of the last `context` bytes -> tanh layer -> byte logits.

Frozen because evaluate.py scores weights with exactly this forward pass; an editable forward
pass could read the evaluation text while being scored.
"""

import numpy as np

NAMES = ("emb", "w1", "b1", "w2", "b2")


def init_params(rng, vocab, context, n_embd, n_hidden, scale):
    def layer(fan_in, shape):
        return rng.standard_normal(shape) * (scale / np.sqrt(fan_in))

    return {
        "emb": layer(1, (vocab, n_embd)) * 0.1,
        "w1": layer(context * n_embd, (context * n_embd, n_hidden)),
        "b1": np.zeros(n_hidden),
        "w2": layer(n_hidden, (n_hidden, vocab)),
        "b2": np.zeros(vocab),
    }


def forward(params, x):
    """Log-probabilities [B, vocab] of the next byte after each row of x [B, context]."""
    e = params["emb"][x].reshape(x.shape[0], -1)
    h = np.tanh(e @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def loss_and_grads(params, x, y):
    """Mean cross-entropy (nats) of the batch and the gradients of every parameter."""
    b = x.shape[0]
    e = params["emb"][x].reshape(b, -1)
    h = np.tanh(e @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(b), y] + 1e-12).mean()
    d_logits = p
    d_logits[np.arange(b), y] -= 1.0
    d_logits /= b
    grads = {"w2": h.T @ d_logits, "b2": d_logits.sum(axis=0)}
    d_h = (d_logits @ params["w2"].T) * (1.0 - h * h)
    grads["w1"] = e.T @ d_h
    grads["b1"] = d_h.sum(axis=0)
    d_e = (d_h @ params["w1"].T).reshape(x.shape[0], x.shape[1], -1)
    d_emb = np.zeros_like(params["emb"])
    np.add.at(d_emb, x, d_e)
    grads["emb"] = d_emb
    return float(loss), grads
