"""SGD (momentum, Nesterov, weight decay), Adam and AdamW with PyTorch's update rules.

An optimizer holds ``(name, Parameter)`` pairs so its state can be saved under the
parameter's name (checkpoints are keyed by name, not position). Parameters with
``requires_grad = False`` are skipped (frozen layers). ``lr`` is set from outside by
the schedule each step; ``lr_scale`` gives some parameters a multiple of it (a new
head during fine-tuning). All arithmetic stays in the parameter's dtype. With the emu
or cupy backend each ``_update`` runs as one fused kernel (``kernels/optim.cu``) that
gives the same bits.
"""
import numpy as np

from ..backend import array_module, kernel_version


class Optimizer:
    state_names = ()  # per-parameter state arrays, saved in checkpoints

    def __init__(self, named_params, lr, weight_decay=0.0, lr_scale=None):
        named_params = list(named_params)
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.params = [(n, p) for n, p in named_params if p.requires_grad]
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_scale = dict(lr_scale or {})
        self.steps = 0
        self.state = {n: {s: array_module(p.data).zeros_like(p.data) for s in self.state_names}
                      for n, p in self.params}

    def zero_grad(self):
        for _, p in self.params:
            p.grad[...] = 0

    def step(self):
        self.steps += 1
        for name, p in self.params:
            dtype = p.data.dtype.type
            lr = dtype(self.lr * self.lr_scale.get(name, 1.0))
            self._update(p.data, p.grad, self.state[name], lr, dtype)

    def _update(self, w, g, state, lr, dtype):
        raise NotImplementedError

    def state_dict(self):
        """``{param name: {state name: array}}`` plus the step count under ``"steps"``."""
        return {"steps": self.steps, "params": self.state}

    def load_state_dict(self, saved):
        self.steps = int(saved["steps"])
        for name, arrays in saved["params"].items():
            if name not in self.state:
                continue  # a parameter frozen or dropped in this run
            for s, value in arrays.items():
                target = self.state[name][s]
                if np.shape(value) != target.shape:
                    raise ValueError(f"optimizer state {name}/{s}: shape {np.shape(value)}, expected {target.shape}")
                target[...] = array_module(target).asarray(value)


class SGD(Optimizer):
    state_names = ("momentum_buffer",)

    def __init__(self, named_params, lr, momentum=0.0, nesterov=False, weight_decay=0.0,
                 dampening=0.0, lr_scale=None):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening 0")
        self.momentum, self.nesterov, self.dampening = momentum, nesterov, dampening
        super().__init__(named_params, lr, weight_decay, lr_scale)

    @kernel_version("optim", "sgd_update")
    def _update(self, w, g, state, lr, dtype):
        d = g + dtype(self.weight_decay) * w if self.weight_decay else g
        if self.momentum:
            buf = state["momentum_buffer"]
            if self.steps == 1:
                buf[...] = d  # PyTorch starts the buffer at the first gradient
            else:
                buf *= dtype(self.momentum)
                buf += dtype(1 - self.dampening) * d
            d = d + dtype(self.momentum) * buf if self.nesterov else buf
        w -= lr * d


class Adam(Optimizer):
    state_names = ("exp_avg", "exp_avg_sq")
    decoupled = False  # AdamW decays the weights directly instead of adding to the gradient

    def __init__(self, named_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 lr_scale=None):
        self.betas, self.eps = betas, eps
        super().__init__(named_params, lr, weight_decay, lr_scale)

    @kernel_version("optim", "adam_update")
    def _update(self, w, g, state, lr, dtype):
        b1, b2 = self.betas
        if self.weight_decay and self.decoupled:
            w *= dtype(1) - lr * dtype(self.weight_decay)
        elif self.weight_decay:
            g = g + dtype(self.weight_decay) * w
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= dtype(b1)
        m += dtype(1 - b1) * g
        v *= dtype(b2)
        v += dtype(1 - b2) * (g * g)
        bias1 = 1 - b1 ** self.steps
        bias2 = 1 - b2 ** self.steps
        denom = np.sqrt(v) / dtype(np.sqrt(bias2))
        denom += dtype(self.eps)
        w -= (lr / dtype(bias1)) * m / denom


class AdamW(Adam):
    decoupled = True

    def __init__(self, named_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 lr_scale=None):
        super().__init__(named_params, lr, betas, eps, weight_decay, lr_scale)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
