"""The training step: gradients of the frozen model and the parameter update.

The agent may rewrite this file (a new optimizer, a schedule, clipping). It receives only
training batches and returns new parameters; it never sees the evaluation data (the sandbox
hides it from the whole training process) and it does not decide the score.
"""

import numpy as np

import config
import model


def init(rng, vocab):
    """Fresh parameters for the sizes in config.py."""
    return model.init_params(
        rng, vocab, config.context, config.n_embd, config.n_hidden, config.init_scale
    )


def step(params, x, y, step_index, total_steps):
    """One SGD step on the batch (x: [B, context] byte ids, y: [B] next byte); returns loss."""
    loss, grads = model.loss_and_grads(params, x, y)
    lr = config.learning_rate
    for name, g in grads.items():
        params[name] -= lr * (g + config.weight_decay * params[name])
    return loss
