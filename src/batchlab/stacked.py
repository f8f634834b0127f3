"""A stacked model: the K runs of a pack as one model with a leading member dimension (the batched engine's,
batchlab.batched).

At small batch sizes a step's fixed cost (Python, dispatch, kernel launches) dwarfs its arithmetic, so one
step of K stacked models costs little more than one step of one. :class:`StackedModel` turns K copies of a
built-in architecture (an ``nn.Sequential`` of Linear, Conv1d/Conv2d, BatchNorm, ReLU, max-pooling and
Flatten layers), each initialized exactly as the run alone would be, into one model:

- linear layers keep their weights as one ``(K, in, out)`` tensor and multiply per member with ``bmm``;
- 1-D convolutions (the MNIST-1D CNN) take one of two forms (``conv1d``, which batchlab.batched.conv1d_form
  chooses from the device and batch size). "unfold" (on CUDA, and on the CPU below batch 32, where
  training runs without oneDNN) unfolds their input into patches once and multiplies them per member with
  ``baddbmm``, channels last, ``(K, B, L, C)``: there several times faster than a grouped convolution,
  whose per-group kernels are small and slow on the CPU. "channels_last" (on the CPU from batch 32, where
  oneDNN runs) is one grouped 2-D convolution of height 1 over the members' channels side by side, in the
  channels_last memory format: oneDNN runs it fastest of the forms ``benchmarks/stacking.py`` compares;
- 2-D convolutions (and dilated 1-D ones) run as one grouped convolution with ``groups=K`` over the
  members' channels laid side by side, ``(B, K*C, ...)``; batch norm and pooling work on that layout, so
  batch norm over the ``K*C`` channels keeps every member's own batch statistics and running averages.

Architectures this cannot stack (a custom module, a residual block) train one after another instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# layers whose parameters are stacked along a leading member dimension, (K, ...); the others concatenate
# the members' channels, (K*C, ...)
MEMBER_MAJOR = ("linear", "unfold")

SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool1d,
             nn.MaxPool2d, nn.Flatten)


def can_stack(model: nn.Module) -> bool:
    """Whether a built model is a plain sequence of layers :class:`StackedModel` knows."""
    if not isinstance(model, nn.Sequential):
        return False
    for layer in model:
        if not isinstance(layer, SUPPORTED):
            return False
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and (layer.groups != 1 or layer.padding_mode != "zeros"):
            return False
        if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
            return False
    return True


class _Patches(torch.autograd.Function):
    """The patches of a 1-D convolution, channels last: ``(K, B, L, C)`` to ``(K, B*L_out, C*kernel)``, with
    zero padding. Its backward adds each tap's gradient back with one strided add per tap, many times
    faster on the CPU than the backward of ``Tensor.unfold``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, width: int, stride: int, pad: int) -> torch.Tensor:
        ctx.shape, ctx.args = x.shape, (width, stride, pad)
        if pad:
            x = F.pad(x, (0, 0, pad, pad))
        patches = x.unfold(2, width, stride)  # (K, B, L_out, C, kernel)
        return patches.reshape(patches.shape[0], patches.shape[1] * patches.shape[2], -1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (k, b, length, c), (width, stride, pad) = ctx.shape, ctx.args
        padded = length + 2 * pad
        out_length = (padded - width) // stride + 1
        grad = grad.view(k, b, out_length, c, width)
        grad_x = grad.new_zeros(k, b, padded, c)
        for j in range(width):
            grad_x[:, :, j : j + stride * (out_length - 1) + 1 : stride].add_(grad[..., j])
        return grad_x[:, :, pad : pad + length], None, None, None


def _conv1d_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple,
                          padding: tuple | str, dilation: tuple, groups: int) -> torch.Tensor:
    """A 1-D convolution as a 2-D one of height 1 in the channels_last memory format (1-D tensors have no
    channels-last format of their own), which oneDNN runs without reordering to its blocked layouts:
    ``(B, C, L)`` to ``(B, C_out, L_out)``, the result's strides channels last."""
    pad = padding if isinstance(padding, str) else (0, padding[0])
    x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    w = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, w, bias, (1, stride[0]), pad, (1, dilation[0]), groups).squeeze(2)


class StackedModel(nn.Module):
    """K copies of one architecture as one model. ``forward(x)`` takes a batch per member, ``x`` of shape
    ``(K, B, ...)``, and returns logits of shape ``(K, B, classes)``. (Evaluation loads each member into its
    own module instead: see batchlab.batched.evaluate_members.) ``conv1d``: the form of 1-D convolutions,
    "unfold" or "channels_last" (see the module's docstring)."""

    def __init__(self, members: list[nn.Sequential], conv1d: str = "unfold"):
        super().__init__()
        if conv1d not in ("unfold", "channels_last"):
            raise ValueError(f"conv1d={conv1d!r}: 'unfold' or 'channels_last'")
        self.k = len(members)
        self.kinds: list[str] = []
        self.layers = nn.ModuleList()
        for layers in zip(*members):
            first = layers[0]
            if isinstance(first, nn.Linear):
                mod = nn.Module()
                # stored transposed, (K, in, out): its gradient then comes out of bmm contiguous, where the
                # (K, out, in) layout would cost a transposing copy of every weight gradient, every step
                mod.weight = nn.Parameter(torch.stack([m.weight.detach().t() for m in layers]).contiguous())
                mod.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone()) if first.bias is not None else None
                kind = "linear"
            elif (isinstance(first, nn.Conv1d) and conv1d == "unfold" and first.dilation == (1,)
                  and isinstance(first.padding, tuple)):
                mod = nn.Module()
                # (K, C_in*kernel, C_out), like a linear layer's weight: patches times weight per member
                mod.weight = nn.Parameter(torch.stack([m.weight.detach().flatten(1).t() for m in layers]).contiguous())
                mod.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone()) if first.bias is not None else None
                mod.shape, mod.stride, mod.padding = tuple(first.weight.shape), first.stride[0], first.padding[0]
                kind = "unfold"
            elif isinstance(first, (nn.Conv1d, nn.Conv2d)):
                mod = nn.Module()
                mod.weight = nn.Parameter(torch.cat([m.weight.detach() for m in layers]).clone())
                mod.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]).clone()) if first.bias is not None else None
                mod.conv = (F.conv2d if isinstance(first, nn.Conv2d) else
                            _conv1d_channels_last if conv1d == "channels_last" else F.conv1d)
                mod.stride, mod.padding, mod.dilation = first.stride, first.padding, first.dilation
                kind = "conv"
            elif isinstance(first, (nn.BatchNorm1d, nn.BatchNorm2d)):
                mod = type(first)(first.num_features * self.k, eps=first.eps, momentum=first.momentum,
                                  affine=first.affine, track_running_stats=first.track_running_stats)
                with torch.no_grad():
                    if first.affine:
                        mod.weight.copy_(torch.cat([m.weight for m in layers]))
                        mod.bias.copy_(torch.cat([m.bias for m in layers]))
                    if first.track_running_stats:
                        mod.running_mean.copy_(torch.cat([m.running_mean for m in layers]))
                        mod.running_var.copy_(torch.cat([m.running_var for m in layers]))
                        mod.num_batches_tracked.copy_(first.num_batches_tracked)
                kind = "norm"
            elif isinstance(first, nn.Flatten):
                mod, kind = nn.Identity(), "flatten"
            elif isinstance(first, (nn.MaxPool1d, nn.MaxPool2d)):
                mod, kind = first, "pool"
            else:  # ReLU: the same on any layout
                mod, kind = first, "same"
            self.layers.append(mod)
            self.kinds.append(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, B, classes)`` of ``x``, a batch per member ``(K, B, ...)``."""
        # layouts: "member" (K, B, C, ...), "grouped" (B, K*C, ...) and, around unfolded 1-D convolutions,
        # "last" (K, B, L, C)
        layout = "member"
        for kind, mod in zip(self.kinds, self.layers):
            if kind == "linear":
                x, layout = self._to(x, layout, "member"), "member"
                out = torch.bmm(x, mod.weight)
                x = out + mod.bias.unsqueeze(1) if mod.bias is not None else out
            elif kind == "unfold":
                x, layout = self._unfold_conv(x, layout, mod), "last"
            elif kind == "conv":
                x, layout = self._to(x, layout, "grouped"), "grouped"
                x = mod.conv(x, mod.weight, mod.bias, mod.stride, mod.padding, mod.dilation, self.k)
            elif kind in ("norm", "pool"):
                x, layout = self._to(x, layout, "grouped"), "grouped"
                x = mod(x)
            elif kind == "flatten":
                x, layout = self._to(x, layout, "member"), "member"
                x = x.reshape(self.k, x.shape[1], -1)
            else:  # elementwise (ReLU): any layout
                x = mod(x)
        if layout != "member":
            raise ValueError("a stacked model must end in a linear layer")
        return x

    def _to(self, x: torch.Tensor, have: str, want: str) -> torch.Tensor:
        """``x`` moved from layout ``have`` to ``want`` (a view where possible)."""
        if have == want:
            return x
        k = self.k
        if have == "grouped":
            x = x.view(x.shape[0], k, -1, *x.shape[2:]).transpose(0, 1)
        elif have == "last":
            x = x.transpose(-1, -2)
        # now (K, B, C, ...)
        if want == "grouped":
            return x.transpose(0, 1).reshape(x.shape[1], k * x.shape[2], *x.shape[3:])
        if want == "last":
            return x.transpose(-1, -2)
        return x

    def _unfold_conv(self, x: torch.Tensor, layout: str, mod: nn.Module) -> torch.Tensor:
        """A 1-D convolution of every member at once: patches ``(K, B*L_out, C*kernel)`` times the members'
        weights ``(K, C*kernel, C_out)``, channels last in and out."""
        k, pad, stride = self.k, mod.padding, mod.stride
        c_out, _, width = mod.shape
        x = self._to(x, layout, "last")  # (K, B, L, C)
        b, length = x.shape[1], (x.shape[2] + 2 * pad - width) // stride + 1
        patches = _Patches.apply(x, width, stride, pad)  # (K, B*L_out, C*kernel)
        if mod.bias is not None:
            out = torch.baddbmm(mod.bias.unsqueeze(1), patches, mod.weight)
        else:
            out = torch.bmm(patches, mod.weight)
        return out.view(k, b, length, c_out)

    def stacked_parameters(self) -> list[tuple[torch.Tensor, int]]:
        """Every trainable parameter with the size of its per-member slices along dim 0 (1 for stacked
        (K, ...) weights, C for channel-concatenated (K*C, ...) ones)."""
        out = []
        for kind, mod in zip(self.kinds, self.layers):
            for p in (getattr(mod, "weight", None), getattr(mod, "bias", None)):
                if isinstance(p, nn.Parameter) and p.requires_grad:
                    out.append((p, 1 if kind in MEMBER_MAJOR else p.shape[0] // self.k))
        return out

    def _tensors(self):
        """(layer kind, layer, attribute name, tensor) of every parameter and buffer, in the order of the
        members' own ``state_dict``."""
        for index, (kind, mod) in enumerate(zip(self.kinds, self.layers)):
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                t = getattr(mod, name, None)
                if isinstance(t, torch.Tensor):
                    yield f"{index}.{name}", kind, mod, name, t

    def member_slice(self, kind: str, t: torch.Tensor, i: int) -> torch.Tensor:
        """Member i's slice of a stacked tensor (a view), in the stacked layout."""
        if kind in MEMBER_MAJOR:
            return t[i]
        c = t.shape[0] // self.k
        return t[i * c : (i + 1) * c]

    @staticmethod
    def own_layout(kind: str, mod: nn.Module, name: str, piece: torch.Tensor) -> torch.Tensor:
        """A member's slice in the layout of its own module (linear and unfolded weights are stored
        transposed)."""
        if name == "weight" and kind == "linear":
            return piece.t()
        if name == "weight" and kind == "unfold":
            return piece.t().view(mod.shape)
        return piece

    @staticmethod
    def stacked_layout(kind: str, name: str, value: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`own_layout`: a tensor of a member's own module in the stacked layout."""
        if name == "weight" and kind in MEMBER_MAJOR:
            return value.reshape(value.shape[0], -1).t()
        return value

    def _member_slices(self, i: int):
        """(layer kind, attribute name, member i's slice) of every parameter and buffer."""
        for _, kind, _, name, t in self._tensors():
            if name != "num_batches_tracked":
                yield kind, name, self.member_slice(kind, t, i)

    @torch.no_grad()
    def silence_member(self, i: int):
        """Set member i's parameters to 0 (running variances to 1): a diverged member then computes only
        zeros and finite numbers instead of NaN, infinities and subnormals, which are slow on the CPU."""
        for _, name, t in self._member_slices(i):
            t.fill_(1.0 if name == "running_var" else 0.0)

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s parameters and buffers, named as in its own ``nn.Sequential`` (views)."""
        return {key: t if name == "num_batches_tracked" else self.own_layout(kind, mod, name,
                                                                             self.member_slice(kind, t, i))
                for key, kind, mod, name, t in self._tensors()}

    @torch.no_grad()
    def load_member_state(self, i: int, state: dict[str, torch.Tensor]):
        """Set member ``i``'s parameters and buffers from a state dict of its own module (a checkpoint)."""
        for key, kind, _, name, t in self._tensors():
            if name == "num_batches_tracked":  # one counter for all members, which step together
                t.copy_(state[key])
            else:
                self.member_slice(kind, t, i).copy_(self.stacked_layout(kind, name, state[key]))

    def parameter_layouts(self) -> list[tuple[str, nn.Module, str]]:
        """(layer kind, layer, attribute name) of each tensor of :meth:`stacked_parameters`, in order."""
        return [(kind, mod, name) for _, kind, mod, name, t in self._tensors()
                if isinstance(t, nn.Parameter) and t.requires_grad]


def member_norms(tensors: list[torch.Tensor], k: int) -> torch.Tensor:
    """Per member, the 2-norm over all given stacked tensors (each of shape (K, ...) or (K*C, ...)): (K,)."""
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(t.reshape(k, -1), dim=1) for t in tensors]), dim=0
    )


def estimate_bytes(model: nn.Module, batch_size: int, input_numel: int) -> int:
    """A rough upper bound of one member's training memory: parameters with gradients and optimizer
    state (x4), plus activations of a batch taken as 8 floats per input value and layer."""
    params = sum(p.numel() for p in model.parameters())
    layers = sum(1 for _ in model.modules())
    return 4 * (4 * params + 8 * batch_size * input_numel * max(1, layers // 2))


def max_members(free_bytes: int, per_member_bytes: int, fraction: float = 0.5) -> int:
    """How many members fit in ``fraction`` of the free device memory (at least 1)."""
    return max(1, int(fraction * free_bytes // max(1, per_member_bytes)))
