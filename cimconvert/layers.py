"""`CrossbarLinear`, `CrossbarConv1d`, `CrossbarConv2d`: drop-in layers simulated on crossbars.

Each layer keeps its float weight (a trainable parameter, used for straight-through gradients and
:meth:`to_float`) and the programmed crossbar state as buffers (so ``state_dict`` and ``.to``
carry the exact programmed chip). Programming happens once, at construction and on
:meth:`reprogram`; every forward reads the programmed cells.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .crossbar import (
    DEFAULT_CHUNK_BYTES,
    ProgrammedWeights,
    crossbar_matmul,
    effective_weight,
    fused_conv_eligible,
    input_absmax,
    input_is_signed,
    program_weights,
    quantize_input,
    quantize_tensor,
    tile_geometry,
    weight_layout,
)
from .conv_engine import crossbar_conv2d, int8_fused_conv2d, tiled_conv_eligible
from .devices import get_device, ir_drop
from .errors import CimConvertError, MappingError
from .policy import Policy
from .precision import ieee_float32
from .registry import resolve_policy
from .seeding import make_generator

__all__ = ["CrossbarLayer", "CrossbarLinear", "CrossbarConv1d", "CrossbarConv2d", "CROSSBAR_CLASSES"]

_STATE_DTYPES = (torch.float32, torch.float64)
_CHIP_STATE = ("cells", "weight_scale", "code_colsum", "adc_full_scale", "adc_observed_max",
               "drift_coeffs", "cells_now", "scale_now")
"""Buffers holding the programmed chip (and its calibration): moved by ``.to()``, never rounded."""


class CrossbarLayer(nn.Module):
    """Common machinery of crossbar-simulated layers (not used directly).

    Subclasses define :meth:`weight_matrix` (the weight as ``(G, K, N)``) and the forward that maps
    inputs to ``(G, M, K)`` matrices and back.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_crossbar(self, policy: Policy | str, seed: int) -> None:
        self.policy = resolve_policy(policy)
        self.seed = int(seed)
        self.program_count = 0
        self.read_count = 0
        self.chunk_bytes = DEFAULT_CHUNK_BYTES
        self.fuse = True  # False: every plane pair separately, through im2col (the reference path)
        self.calibrating = False
        planes_in = len(self.policy.input_slices)
        planes_w = weight_layout(self.policy).planes
        device = self.weight.device
        self.register_buffer("adc_full_scale", torch.full((planes_in, planes_w), float("nan"), device=device))
        self.register_buffer("adc_observed_max", torch.zeros(planes_in, planes_w, device=device),
                             persistent=False)
        self.time_since_programming = 0.0
        # what the forward reads when it is not the programmed state (see _refresh_reads)
        self.register_buffer("cells_now", None, persistent=False)
        self.register_buffer("scale_now", None, persistent=False)
        self.program()

    # -- weight side ----------------------------------------------------------------------------
    def weight_matrix(self) -> torch.Tensor:
        """The weight as ``(G, K, N)`` matrices (rows = inputs, columns = outputs)."""
        raise NotImplementedError

    def program(self) -> None:
        """(Re)program the arrays from the current float weight; draws programming noise."""
        w = self.weight_matrix().detach()
        if w.dtype not in _STATE_DTYPES:
            w = w.float()
        # the chip is drawn on the CPU: one seed programs the same chip on every device
        generator = make_generator("cpu", self.seed, "program", self.program_count)
        state = program_weights(w, self.policy, generator)
        self.geometry = state.geometry
        for name, value in (
            ("cells", state.cells), ("weight_scale", state.scale), ("code_colsum", state.code_colsum),
            ("drift_coeffs", state.drift_coeffs),
        ):
            if name in self._buffers:
                self._buffers[name] = value
            else:
                self.register_buffer(name, value)
        self._refresh_reads()

    def reprogram(self, seed: int | None = None) -> None:
        """Program the arrays again: a new programming-noise draw (or the draw of ``seed``).

        Call it after changing the float weight (e.g. after an optimizer step).
        """
        if seed is None:
            self.program_count += 1
        else:
            self.seed, self.program_count = int(seed), 0
        self.program()

    def _programmed(self) -> ProgrammedWeights:
        cells = self.cells if self.cells_now is None else self.cells_now
        scale = self.weight_scale if self.scale_now is None else self.scale_now
        return ProgrammedWeights(cells, scale, self.code_colsum, self.geometry)

    # -- time, drift, IR drop -------------------------------------------------------------------
    def set_time(self, seconds: float) -> None:
        """Read the arrays ``seconds`` after programming (drift and accumulated read noise).

        The device's state at that time is one draw from the layer's seed (the same ``seconds``
        give the same chip), the drift compensation factor is computed again, and programming
        anew keeps the time. Stable devices (``gaussian``) are unaffected.

        Raises:
            CimConvertError: ``seconds`` is negative or not finite.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
            math.isfinite(seconds) and seconds >= 0
        ):
            raise CimConvertError(f"Time since programming {seconds!r} is invalid; allowed: seconds >= 0.")
        self.time_since_programming = float(seconds)
        self._refresh_reads()

    def _cell_planes(self, cells: torch.Tensor) -> torch.Tensor:
        """``(G, T, R, P * N)`` cells as ``(P, G, T, R, N)`` (the layout of :mod:`.devices`)."""
        g, t, r, _ = cells.shape
        return cells.view(g, t, r, weight_layout(self.policy).planes, -1).permute(3, 0, 1, 2, 4)

    def _refresh_reads(self) -> None:
        """Set what the forward reads: the cells at the current time through resistive wires,
        and the drift-compensated weight scales (the programmed state itself for stable cells on
        ideal wires)."""
        self._kernel_cache: dict = {}  # per-tile convolution kernels of the current read state
        device = get_device(self.policy.device)
        if not device.time_dependent and self.policy.ir_drop_wire_ohm <= 0:
            self.cells_now = self.scale_now = None
            return
        levels = weight_layout(self.policy).levels
        generator = make_generator("cpu", self.seed, "drift", self.program_count,
                                   self.time_since_programming)
        programmed = self._cell_planes(self.cells.to(self.weight_scale.dtype))
        coeffs = None if self.drift_coeffs is None else self._cell_planes(self.drift_coeffs)
        now = device.at_time(programmed, coeffs, levels, self.policy, self.time_since_programming, generator)
        self.cells_now = ir_drop(now, levels, self.policy).permute(1, 2, 3, 0, 4).reshape(self.cells.shape)
        self.scale_now = None
        if device.time_dependent and self.policy.drift_compensation != "none":
            after_programming = ir_drop(programmed, levels, self.policy).permute(1, 2, 3, 0, 4)
            factor = self._drift_factor(after_programming.reshape(self.cells.shape), self.cells_now)
            self.scale_now = self.weight_scale * factor

    def _drift_factor(self, reference: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Drift compensation (aihwkit ``GlobalDriftCompensation`` / ``PerColumnDriftCompensation``).

        The read-out of the layer on one-hot inputs through ideal converters, without per-read
        noise, is its effective weight; the factor is the mean absolute read-out right after
        programming (``reference`` cells) over the one now (``current``), for the whole layer or
        per output column (1 where the current read-out is 0). It multiplies the output digitally.
        """
        per_column = self.policy.drift_compensation == "per_column"
        quiet = self.policy.replace(read_noise=0.0)

        def readout(cells: torch.Tensor) -> torch.Tensor:
            state = ProgrammedWeights(cells, self.weight_scale, self.code_colsum, self.geometry)
            w = effective_weight(state, quiet, dtype=cells.dtype)[:, : self.geometry.k].abs()
            return w.mean(dim=1, keepdim=True) if per_column else w.mean()

        before, now = readout(reference), readout(current)
        return torch.where(now > 0, before / now, torch.ones_like(now))

    # -- forward --------------------------------------------------------------------------------
    def _draws_per_read(self) -> bool:
        return self.policy.read_noise > 0 or self.policy.input_noise > 0 or self.policy.adc_noise > 0

    def _read_generator(self, device: torch.device) -> torch.Generator | None:
        """The generator of this forward's read/DAC noise (None when the policy draws none)."""
        if not self._draws_per_read():
            return None
        self.read_count += 1
        return make_generator(device, self.seed, "read", self.program_count, self.read_count - 1)

    def _needs_grad(self, x: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)

    def crossbar_forward(
        self, x: torch.Tensor, signed: bool | None = None, tensor_absmax: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Crossbar product of input matrices ``(G, M, K)`` -> ``(G, M, N)``, in ``x``'s dtype.

        ``tensor_absmax``: the layer input's maximum when ``x`` holds patches of it.
        """
        y = crossbar_matmul(
            x.detach(),
            self._programmed(),
            self.policy,
            generator=self._read_generator(x.device),
            signed=signed,
            tensor_absmax=tensor_absmax,
            adc_full_scale=self.adc_full_scale,
            observed_max=self.adc_observed_max if self.calibrating else None,
            chunk_bytes=self.chunk_bytes,
            fuse=self.fuse,
            kernel_cache=None if torch.jit.is_tracing() else self._kernel_cache,
        ).to(x.dtype)
        if self._needs_grad(x):
            y_ste = torch.bmm(self._fake_quant_input(x, tensor_absmax), self._fake_quant_weight().to(x.dtype))
            y = y_ste + (y - y_ste).detach()
        return y

    def _fake_quant_weight(self) -> torch.Tensor:
        """Quantized, noise-free weight with identity gradient (straight-through)."""
        w = self.weight_matrix()
        g, k, n = w.shape
        t, r = self.geometry.tiles, self.geometry.rows
        wq = torch.nn.functional.pad(w.detach(), (0, 0, 0, t * r - k)).view(g, t, r, n)
        wq = torch.round(wq / self.weight_scale.unsqueeze(2).to(w)) * self.weight_scale.unsqueeze(2).to(w)
        return w + (wq.view(g, t * r, n)[:, :k] - w).detach()

    def _fake_quant_input(self, x: torch.Tensor, tensor_absmax: torch.Tensor | None = None) -> torch.Tensor:
        """Quantized input with identity gradient (straight-through)."""
        signed = input_is_signed(x.detach(), self.policy)
        codes, scale = quantize_input(x.detach().float(), self.policy, self.geometry, signed, tensor_absmax)
        g, m, k = x.shape
        xq = (codes * scale.unsqueeze(-1)).view(g, m, -1)[:, :, :k].to(x.dtype)
        return x + (xq - x).detach()

    # -- ADC calibration ------------------------------------------------------------------------
    def start_calibration(self) -> None:
        """Record column counts on the next forwards (ADC bypassed) to set a calibrated range."""
        self.adc_observed_max.zero_()
        self.calibrating = True

    def finish_calibration(self) -> None:
        """Set the ADC full scale of every plane pair to the largest count recorded (>= 1)."""
        self.calibrating = False
        self.adc_full_scale.copy_(self.adc_observed_max.clamp(min=1.0))

    # -- state ----------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        """Policy, seed and draw counters, saved in ``state_dict``."""
        return {
            "policy": self.policy.to_dict(),
            "seed": self.seed,
            "program_count": self.program_count,
            "read_count": self.read_count,
            "time_since_programming": self.time_since_programming,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self.policy = Policy.from_dict(state["policy"])
        self.seed = int(state["seed"])
        self.program_count = int(state["program_count"])
        self.read_count = int(state["read_count"])
        self.time_since_programming = float(state.get("time_since_programming", 0.0))
        self.geometry = tile_geometry(self.weight_matrix().shape[1], self.policy.array_rows)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        # a saved chip may use another policy (other plane counts, byte or float cells): take the
        # saved buffer shapes and dtypes
        for name in ("cells", "weight_scale", "code_colsum", "adc_full_scale"):
            saved = state_dict.get(prefix + name)
            own = self._buffers.get(name)
            if saved is not None and own is not None and (saved.shape, saved.dtype) != (own.shape, own.dtype):
                self._buffers[name] = torch.empty(saved.shape, dtype=saved.dtype, device=own.device)
        if prefix + "cells" in state_dict:  # a whole chip: drift coefficients as it has them
            saved = state_dict.get(prefix + "drift_coeffs")
            self.drift_coeffs = None if saved is None else torch.empty(
                saved.shape, dtype=saved.dtype, device=self.cells.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._refresh_reads()
        planes = self.adc_full_scale.shape
        if self.adc_observed_max.shape != planes:
            self.adc_observed_max = torch.zeros(planes, device=self.adc_observed_max.device)

    def __getstate__(self) -> dict[str, Any]:
        # packed int8 kernels are opaque to copy and pickle; they are rebuilt on the next forward
        return {**super().__getstate__(), "_kernel_cache": {}}

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 (nn.Module signature)
        chip = {name: self._buffers[name] for name in _CHIP_STATE if self._buffers.get(name) is not None}
        super()._apply(fn, recurse)
        # the chip moves with the module but is never rounded: the cells keep their storage
        # format (uint8 digits, float16 or float32 values: readers convert) and a half-precision
        # conversion (model.half()) leaves the state as it was, on the new device
        for name, old in chip.items():
            new = self._buffers[name]
            if new.dtype != old.dtype and (name == "cells" or new.dtype not in _STATE_DTYPES):
                self._buffers[name] = old.to(new.device)
        self._kernel_cache = {}  # cached kernels live on the old device / dtype
        return self

    def crossbar_extra_repr(self) -> str:
        """Policy name and tiling, appended to ``extra_repr``."""
        return f"policy={self.policy.name}, row_tiles={self.geometry.tiles}, seed={self.seed}"


class CrossbarLinear(CrossbarLayer):
    """``nn.Linear`` on crossbars: ``y = crossbar(x, W^T) + b`` for inputs of any batch shape."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        policy: Policy | str = "ideal",
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        template = nn.Linear(in_features, out_features, bias, device=device, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight, self.bias = template.weight, template.bias
        self._init_crossbar(policy, seed)

    def weight_matrix(self) -> torch.Tensor:
        return self.weight.t().unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise MappingError(
                f"CrossbarLinear expects inputs with last dimension {self.in_features}, got shape "
                f"{tuple(x.shape)}."
            )
        with ieee_float32():
            y = self.crossbar_forward(x.reshape(1, -1, self.in_features))
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y + self.bias.to(y.dtype) if self.bias is not None else y

    @classmethod
    def from_float(cls, module: nn.Linear, policy: Policy | str, seed: int = 0) -> CrossbarLinear:
        """Crossbar copy of ``module``; shares its weight and bias parameters."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = module.in_features, module.out_features
        layer.weight, layer.bias = module.weight, module.bias
        layer._init_crossbar(policy, seed)
        return layer

    def to_float(self) -> nn.Linear:
        """An ``nn.Linear`` holding the float weight and bias."""
        out = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        out.weight = nn.Parameter(self.weight.detach().clone())
        if self.bias is not None:
            out.bias = nn.Parameter(self.bias.detach().clone())
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self.crossbar_extra_repr()}")


_CONV_ATTRS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
               "groups", "padding_mode")


class _CrossbarConvNd(CrossbarLayer):
    """Convolution as im2col + crossbar product; groups map as separate block-diagonal blocks."""

    _float_class: type[nn.Module]
    _spatial_dims: int

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", policy: Policy | str = "ideal", seed: int = 0,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        template = self._float_class(in_channels, out_channels, kernel_size, stride=stride,
                                     padding=padding, dilation=dilation, groups=groups, bias=bias,
                                     padding_mode=padding_mode, device=device, dtype=dtype)
        for attr in _CONV_ATTRS:
            setattr(self, attr, getattr(template, attr))
        self.weight, self.bias = template.weight, template.bias
        self._init_crossbar(policy, seed)

    def weight_matrix(self) -> torch.Tensor:
        g = self.groups
        n_g = self.out_channels // g
        return self.weight.reshape(g, n_g, -1).transpose(1, 2)

    def _explicit_padding(self, x: torch.Tensor) -> torch.Tensor:
        """Apply padding (including 'same' and non-zero modes) so the unfold needs none."""
        dims = self._spatial_dims
        if isinstance(self.padding, str):
            if self.padding == "valid":
                return x
            pads: list[int] = []
            for k, d in zip(reversed(self.kernel_size), reversed(self.dilation)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
        else:
            pads = [p for p in reversed(self.padding) for _ in range(2)]
        if not any(pads):
            return x
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, pads[: 2 * dims], mode=mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = self._spatial_dims
        if x.dim() != dims + 2 or x.shape[1] != self.in_channels:
            raise MappingError(
                f"{type(self).__name__} expects (batch, {self.in_channels}, {'L' if dims == 1 else 'H, W'}) "
                f"inputs, got shape {tuple(x.shape)}."
            )
        x = self._explicit_padding(x)
        if dims == 1:
            x = x.unsqueeze(2)
        with ieee_float32():
            y = self._crossbar_conv(x)
        if dims == 1:
            y = y.squeeze(2)
        if self.bias is not None:
            bias = self.bias.to(y.dtype).view(1, -1, *([1] * dims))
            y = y + bias if y.requires_grad else y.add_(bias)  # the output is ours: no copy
        return y

    def _crossbar_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The crossbar convolution of the padded input, by the fastest path that applies."""
        signed = input_is_signed(x, self.policy)
        direct = not self.calibrating and not self._needs_grad(x) and self.fuse
        if direct and fused_conv_eligible(self.policy, signed):
            return self._fused_conv(x, signed)
        if direct and tiled_conv_eligible(self.policy, signed):
            kernel, stride, dilation = self._conv_params()
            return crossbar_conv2d(
                x.detach(), self._programmed(), self.policy, kernel, stride, dilation, signed=signed,
                generator=self._read_generator(x.device), adc_full_scale=self.adc_full_scale,
                chunk_bytes=self.chunk_bytes,
                kernel_cache=None if torch.jit.is_tracing() else self._kernel_cache,
            ).to(x.dtype)
        return self._im2col_conv(x, signed)

    def _conv_params(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Kernel, stride and dilation as 2-D tuples (Conv1d runs as height-1 Conv2d)."""
        if self._spatial_dims == 1:
            return (1, *self.kernel_size), (1, *self.stride), (1, *self.dilation)
        return tuple(self.kernel_size), tuple(self.stride), tuple(self.dilation)

    def _fused_conv(self, x: torch.Tensor, signed: bool) -> torch.Tensor:
        """Ideal-converter path: one convolution of the quantized input with the read weight."""
        kernel, stride, dilation = self._conv_params()
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        y = int8_fused_conv2d(x.detach().to(dtype), self._programmed(), self.policy, kernel, stride,
                              dilation, signed=signed, kernel_cache=self._kernel_cache)
        if y is not None:
            return y.to(x.dtype)
        key = ("fused", dtype)
        w = self._kernel_cache.get(key)
        if w is None:
            w = effective_weight(self._programmed(), self.policy, self._read_generator(x.device), dtype)
            w = w[:, : self.geometry.k].transpose(1, 2).reshape(self.out_channels, -1, *kernel)
            if self.policy.read_noise <= 0 and not torch.jit.is_tracing():  # same read every time
                self._kernel_cache[key] = w
        x_q = quantize_tensor(x.detach().to(dtype), self.policy, signed)
        return F.conv2d(x_q, w, None, stride, 0, dilation, self.groups).to(x.dtype)

    def _im2col_conv(self, x: torch.Tensor, signed: bool) -> torch.Tensor:
        """General path: unfold the patches and run the crossbar product per group."""
        kernel, stride, dilation = self._conv_params()
        b, _, h, w = x.shape
        h_out = (h - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
        w_out = (w - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
        cols = F.unfold(x, kernel, dilation=dilation, stride=stride)  # (B, C*k, L)
        g = self.groups
        mat = cols.view(b, g, -1, h_out * w_out).permute(1, 0, 3, 2).reshape(g, b * h_out * w_out, -1)
        y = self.crossbar_forward(mat, signed, input_absmax(x.detach(), signed))  # (G, B*L, N_g)
        return y.view(g, b, h_out * w_out, -1).permute(1, 0, 3, 2).reshape(b, self.out_channels, h_out, w_out)

    @classmethod
    def from_float(cls, module: nn.Module, policy: Policy | str, seed: int = 0) -> _CrossbarConvNd:
        """Crossbar copy of a ``Conv{1,2}d`` ``module``; shares its weight and bias parameters."""
        if not isinstance(module, cls._float_class):
            raise MappingError(f"{cls.__name__}.from_float expects {cls._float_class.__name__}, got "
                               f"{type(module).__name__}.")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        for attr in _CONV_ATTRS:
            setattr(layer, attr, getattr(module, attr))
        layer.weight, layer.bias = module.weight, module.bias
        layer._init_crossbar(policy, seed)
        return layer

    def to_float(self) -> nn.Module:
        """The float convolution with the same hyper-parameters, weight and bias."""
        out = self._float_class(
            self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
            padding=self.padding, dilation=self.dilation, groups=self.groups,
            bias=self.bias is not None, padding_mode=self.padding_mode,
            device=self.weight.device, dtype=self.weight.dtype,
        )
        out.weight = nn.Parameter(self.weight.detach().clone())
        if self.bias is not None:
            out.bias = nn.Parameter(self.bias.detach().clone())
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"{self.crossbar_extra_repr()}")


class CrossbarConv2d(_CrossbarConvNd):
    """``nn.Conv2d`` on crossbars (any stride, padding, dilation, groups, padding mode)."""

    _float_class = nn.Conv2d
    _spatial_dims = 2


class CrossbarConv1d(_CrossbarConvNd):
    """``nn.Conv1d`` on crossbars (computed as a 2-D convolution of height 1)."""

    _float_class = nn.Conv1d
    _spatial_dims = 1


CROSSBAR_CLASSES: dict[type[nn.Module], type[CrossbarLayer]] = {
    nn.Linear: CrossbarLinear,
    nn.Conv1d: CrossbarConv1d,
    nn.Conv2d: CrossbarConv2d,
}
"""Float module class -> crossbar class used by :func:`cimconvert.convert`."""

