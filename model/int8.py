"""Int8 GRU and Linear layers for CPU inference whose replies never depend on their batch mates.

torch's dynamic int8 quantisation (torch.ao) gives each layer's input one range for the whole
batch, so a text's reply can change with the other texts of its TorchServe batch (2-3% of
replies did). Here every input row is quantised on its own range and the weights with a scale
per output channel, on the same fbgemm kernels: each row is mapped onto [-1, 1], and every row
carries two extra inputs, -1 and 1, with zero weights, which pins the range fbgemm picks for
the whole matrix at [-1, 1]. A row is then quantised as it would be alone; int32 sums are exact;
and the float steps around them run row by row (see gru_cell), so a row's results are bit for bit
the same alone or in any batch.

The per-step functions are compiled with TorchScript where it is available (about half the
Python overhead of a GRU step); they run eagerly otherwise, with the same results.
Inference only; drop-in for nn.Linear and nn.GRU (tensor or PackedSequence input).
"""
import logging
import warnings
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

logger = logging.getLogger(__name__)

try:  # fbgemm's packed weights: the type TorchScript needs to see in the signatures below
    PackedWeight = torch.classes.quantized.LinearPackedParamsBase
except (AttributeError, RuntimeError):  # a torch without it: compiled() falls back to eager code
    PackedWeight = object


def int8_linear(x: Tensor, weight: PackedWeight, bias: Tensor, weight_sums: Tensor, range_cols: Tensor,
                bounded: bool) -> Tensor:
    """x (N, K) float -> x W^T + b (N, out), each row of x quantised on its own range.

    A row is mapped onto [-1, 1] by x = half * x' + mid (its own min and max), quantised by
    fbgemm on that fixed range, and mapped back: x W^T = half * (x' W^T) + mid * (W 1).
    bounded: every |x| <= 1 already (a tanh or GRU output), so rows are quantised as they are,
    saving the mapping; as precise for such rows, whose values span most of [-1, 1]; the bias is
    then added by fbgemm (packed with the weight: see Int8Weight). Should an
    |x| exceed 1 after all, fbgemm's range grows to cover it: the result stays right but may
    then depend on the other rows.
    """
    if bounded:
        rows = torch.cat((x, range_cols.expand(x.size(0), 2)), dim=1)  # (N, K + 2)
        return torch.ops.quantized.linear_dynamic(rows, weight, True)  # bias packed in the weight
    low, high = torch.aminmax(x, dim=1, keepdim=True)  # (N, 1) each
    half = ((high - low) / 2).clamp_min(1e-12)
    mid = (high + low) / 2
    unit = ((x - mid) / half).clamp(-1.0, 1.0)  # the clamp only trims rounding errors
    rows = torch.cat((unit, range_cols.expand(x.size(0), 2)), dim=1)  # (N, K + 2), range exactly [-1, 1]
    # reduce_range: 7-bit inputs, as torch.ao uses on x86, so fbgemm's 16-bit pair sums cannot saturate
    y = torch.ops.quantized.linear_dynamic(rows, weight, True)
    return torch.addcmul(torch.addcmul(bias, mid, weight_sums), y, half)


def gru_cell(gates_x: Tensor, h: Tensor, weight: PackedWeight, bias: Tensor, weight_sums: Tensor,
             range_cols: Tensor, hidden: int) -> Tensor:
    """nn.GRU's update: gates_x (n, 3H) = W_ih x + b_ih, h (n, H) -> h' (n, H)."""
    gates_h = int8_linear(h, weight, bias, weight_sums, range_cols, True)  # (n, 3H); |h| <= 1
    # sigmoid and tanh read strided views, so torch runs them row by row: a contiguous (n, H)
    # input would be run as one flat vector whose SIMD/scalar split, and so the last bit of
    # some results, depends on n.
    both = gates_x + gates_h  # (n, 3H); only the r and z columns are used
    r, z = torch.sigmoid(both[:, : 2 * hidden]).chunk(2, dim=1)
    n = both[:, 2 * hidden:]
    torch.addcmul(gates_x[:, 2 * hidden:], r, gates_h[:, 2 * hidden:], out=n)  # (n, H) view, row stride 3H
    return torch.lerp(torch.tanh(n), h, z)  # (1 - z) * n + z * h


def gru_step(gates_x: Tensor, h: Tensor, weight: PackedWeight, bias: Tensor, weight_sums: Tensor, range_cols: Tensor,
             hidden: int) -> tuple[Tensor, Tensor]:
    """One time step of packed rows: gates_x (n, 3H), h (B, H) -> (output (n, H), h (B, H) after the step).

    Sequences are sorted by length (packing), so the first n are active and the others keep their hidden
    state, as nn.GRU does with a PackedSequence.
    """
    n = gates_x.size(0)
    out = gru_cell(gates_x, h[:n], weight, bias, weight_sums, range_cols, hidden)
    return out, out if n == h.size(0) else torch.cat((out, h[n:]))


def gru_steps(gates_x: list[Tensor], h: Tensor, weight: PackedWeight, bias: Tensor, weight_sums: Tensor,
              range_cols: Tensor, hidden: int, reverse: bool) -> tuple[list[Tensor], Tensor]:
    """One layer and direction over time: gates_x[t] (n_t, 3H), h (B, H) -> outputs[t] (n_t, H), final h."""
    outputs = [h] * len(gates_x)
    steps = list(range(len(gates_x)))
    if reverse:
        steps.reverse()
    for t in steps:
        outputs[t], h = gru_step(gates_x[t], h, weight, bias, weight_sums, range_cols, hidden)
    return outputs, h


def gru_steps_both(gates_f: list[Tensor], gates_b: list[Tensor], h_f: Tensor, h_b: Tensor, weight_f: PackedWeight,
                   bias_f: Tensor, sums_f: Tensor, weight_b: PackedWeight, bias_b: Tensor, sums_b: Tensor,
                   range_cols: Tensor, hidden: int) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
    """gru_steps for both directions of a layer in one compiled loop (one call from Python instead of two): the
    forward's step t, then the backward's step T-1-t."""
    outputs_f, outputs_b = [h_f] * len(gates_f), [h_b] * len(gates_b)
    for t in range(len(gates_f)):
        outputs_f[t], h_f = gru_step(gates_f[t], h_f, weight_f, bias_f, sums_f, range_cols, hidden)
        back = len(gates_b) - 1 - t
        outputs_b[back], h_b = gru_step(gates_b[back], h_b, weight_b, bias_b, sums_b, range_cols, hidden)
    return outputs_f, outputs_b, h_f, h_b


def _script(fn):
    """fn compiled by TorchScript, or fn itself where TorchScript is missing or refuses it."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                                    category=DeprecationWarning)
            return torch.jit.script(fn)
    except Exception as e:  # TorchScript may be gone from a future torch: eager gives the same numbers
        logger.warning("TorchScript unavailable (%s); int8 layers run eagerly", type(e).__name__)
        return fn


_compiled: dict = {}


def compiled(name: str):
    """The TorchScript version of int8_linear, gru_cell, gru_steps or gru_steps_both, compiled on first use."""
    if name not in _compiled:
        _compiled[name] = _script({"int8_linear": int8_linear, "gru_cell": gru_cell, "gru_steps": gru_steps,
                                   "gru_steps_both": gru_steps_both}[name])
    return _compiled[name]


class Int8Weight(nn.Module):
    """One weight matrix (out, in) and bias, packed for fbgemm: int8, one scale per output channel.

    bounded: its inputs are within [-1, 1] (see int8_linear), so the bias is packed too and fbgemm
    adds it, an operation less per product.
    """

    def __init__(self, weight: Tensor, bias: Optional[Tensor], bounded: bool):
        super().__init__()
        out_features, in_features = weight.shape
        padded = torch.cat((weight.detach().float(), weight.new_zeros(out_features, 2).float()), dim=1)
        scale = (padded.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
        zero = torch.zeros(out_features, dtype=torch.long)
        with warnings.catch_warnings():
            # recent torch warns that quantised tensors are deprecated; torch 2.4 (the serving image) has no other way
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                    category=UserWarning)
            qweight = torch.quantize_per_channel(padded, scale, zero, 0, torch.qint8)
        self.register_buffer("bias", bias.detach().float() if bias is not None else torch.zeros(out_features))
        self.packed = torch.ops.quantized.linear_prepack(qweight, self.bias if bounded else None)
        self.register_buffer("weight_sums", qweight.dequantize().sum(dim=1))  # (out,): W 1, as quantised
        self.register_buffer("range_cols", torch.tensor([[-1.0, 1.0]]))
        self.in_features, self.out_features, self.bounded = in_features, out_features, bounded

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """Saved as int8 weights (out, in) and their float scales (out,), for sizes; never loaded back."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        qweight, _ = torch.ops.quantized.linear_unpack(self.packed)
        destination[prefix + "weight"] = qweight.int_repr()[:, : self.in_features].clone()
        destination[prefix + "scale"] = qweight.q_per_channel_scales().float()


class Int8Linear(nn.Module):
    """nn.Linear's forward with int8 weights and per-row int8 inputs."""

    def __init__(self, linear: nn.Linear, bounded_input: bool = False):
        super().__init__()
        self.weight = Int8Weight(linear.weight, linear.bias, bounded_input)  # bounded: the caller promises |x| <= 1
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._linear = compiled("int8_linear")

    @property
    def bounded_input(self) -> bool:
        """Whether inputs are taken to be within [-1, 1] (the weight was packed for that)."""
        return self.weight.bounded

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        y = self._linear(x.reshape(-1, self.in_features), w.packed, w.bias, w.weight_sums, w.range_cols,
                         w.bounded)
        return y.reshape(x.shape[:-1] + (self.out_features,))  # (..., out)


class Int8GRU(nn.Module):
    """nn.GRU's inference forward (any number of layers, either direction) with int8 weights."""

    def __init__(self, gru: nn.GRU):
        super().__init__()
        if gru.batch_first or not gru.bias:
            raise ValueError("Int8GRU supports batch_first=False and bias=True only")
        self.hidden_size, self.num_layers = gru.hidden_size, gru.num_layers
        self.directions = 2 if gru.bidirectional else 1
        suffixes = ("", "_reverse")[: self.directions]
        # One input projection per layer for both directions, which read the same input: one
        # product instead of two (rows are scaled once; per-output-channel weights are unchanged).
        self.input_weights = nn.ModuleList(
            Int8Weight(torch.cat([getattr(gru, f"weight_ih_l{layer}{s}") for s in suffixes]),
                       torch.cat([getattr(gru, f"bias_ih_l{layer}{s}") for s in suffixes]),
                       bounded=layer > 0)  # layers above the first read GRU outputs, |x| <= 1
            for layer in range(self.num_layers))
        self.hidden_weights = nn.ModuleList(
            Int8Weight(getattr(gru, f"weight_hh_l{layer}{s}"), getattr(gru, f"bias_hh_l{layer}{s}"), bounded=True)
            for layer in range(self.num_layers) for s in suffixes)
        self.gate_input = False  # True: layer 0's input is already W_ih x + b_ih (a GateTable's rows)
        self._linear, self._cell, self._steps = compiled("int8_linear"), compiled("gru_cell"), compiled("gru_steps")
        self._both = compiled("gru_steps_both")
        self.directions_together = True  # both directions of a layer in one compiled loop (False: one loop each)

    def input_gates(self, layer: int, x: Tensor) -> Tensor:
        """x (N, I) -> W_ih x + b_ih (N, D*3H) for `layer`."""
        if layer == 0 and self.gate_input:
            return x
        w_ih = self.input_weights[layer]
        return self._linear(x, w_ih.packed, w_ih.bias, w_ih.weight_sums, w_ih.range_cols, w_ih.bounded)

    def forward(self, input, hx: Optional[Tensor] = None):
        """input (T, B, I) or a PackedSequence; hx (L*D, B, H) -> (output like input, h_n (L*D, B, H)).

        With gate_input, I is D*3H: the first layer's input gates (see GateTable).
        """
        if isinstance(input, Tensor) and input.size(0) == 1 and self.directions == 1 and hx is not None:
            return self._one_step(input[0], hx)
        if isinstance(input, PackedSequence):
            data, batch_sizes = input.data, input.batch_sizes.tolist()
            if hx is not None and input.sorted_indices is not None:
                hx = hx.index_select(1, input.sorted_indices)
        else:
            data, batch_sizes = input.reshape(-1, input.size(-1)), [input.size(1)] * input.size(0)
        if hx is None:
            hx = data.new_zeros(self.num_layers * self.directions, batch_sizes[0], self.hidden_size)
        finals = []
        for layer in range(self.num_layers):
            gates_x = self.input_gates(layer, data)  # (N, D*3H): every step of both directions in one product
            if self.directions == 2 and self.directions_together:
                data, h_pair = self._run_both(gates_x, batch_sizes, hx, layer)  # (N, 2H)
                finals += h_pair
            else:
                outputs = []
                for d, gates in enumerate(gates_x.split(3 * self.hidden_size, dim=1)):  # (N, 3H) per direction
                    k = layer * self.directions + d
                    out, h_n = self._run(gates, batch_sizes, hx[k], k, reverse=d == 1)
                    outputs.append(out)
                    finals.append(h_n)
                data = torch.cat(outputs, dim=1) if self.directions == 2 else outputs[0]  # (N, D*H)
        h_n = torch.stack(finals)  # (L*D, B, H)
        if isinstance(input, PackedSequence):
            if input.unsorted_indices is not None:
                h_n = h_n.index_select(1, input.unsorted_indices)
            return PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices), h_n
        return data.reshape(input.size(0), input.size(1), -1), h_n

    def _one_step(self, x: Tensor, hx: Tensor) -> tuple[Tensor, Tensor]:
        """A greedy decoding step, without the bookkeeping of sequences: x (B, I) -> ((1, B, H), (L, B, H))."""
        finals = []
        for k in range(self.num_layers):
            w_hh = self.hidden_weights[k]
            x = self._cell(self.input_gates(k, x), hx[k], w_hh.packed, w_hh.bias, w_hh.weight_sums, w_hh.range_cols,
                           self.hidden_size)  # (B, H)
            finals.append(x)
        return x.unsqueeze(0), torch.stack(finals)

    def _run_both(self, gates_x: Tensor, batch_sizes: list[int], hx: Tensor, layer: int) -> tuple[Tensor, list]:
        """Both directions of a layer: input gates (N, 6H) of packed rows -> outputs (N, 2H) (forward's, then
        backward's) and [forward, backward] final hidden states (B, H)."""
        forward, backward = (list(g.split(batch_sizes)) for g in gates_x.split(3 * self.hidden_size, dim=1))
        w_f, w_b = self.hidden_weights[2 * layer], self.hidden_weights[2 * layer + 1]
        out_f, out_b, h_f, h_b = self._both(forward, backward, hx[2 * layer], hx[2 * layer + 1],
                                            w_f.packed, w_f.bias, w_f.weight_sums, w_b.packed, w_b.bias,
                                            w_b.weight_sums, w_f.range_cols, self.hidden_size)
        return torch.cat((torch.cat(out_f), torch.cat(out_b)), dim=1), [h_f, h_b]

    def _run(self, gates_x: Tensor, batch_sizes: list[int], h: Tensor, k: int,
             reverse: bool) -> tuple[Tensor, Tensor]:
        """One layer and direction: input gates (N, 3H) of packed rows -> outputs (N, H), final hidden (B, H)."""
        w_hh = self.hidden_weights[k]
        outputs, h = self._steps(list(gates_x.split(batch_sizes)), h, w_hh.packed, w_hh.bias, w_hh.weight_sums,
                                 w_hh.range_cols, self.hidden_size, reverse)
        return torch.cat(outputs), h


class GateTable(nn.Module):
    """An embedding whose rows are a GRU's first-layer input gates, W_ih e + b_ih, for every word.

    A greedy step then looks its input gates up instead of computing them: one int8 product and
    its row mapping less per step and layer-0 pass, for V * D*3H floats of memory. Since every row
    is quantised on its own, a looked-up row is bit for bit the one the GRU would have computed.
    """

    def __init__(self, embedding: nn.Embedding, gru: Int8GRU):
        super().__init__()
        self.embedding = embedding  # kept, so a state_dict holds what rebuilds the table
        with torch.no_grad():
            table = gru.input_gates(0, embedding.weight.detach().float())  # (V, D*3H)
        self.register_buffer("table", table, persistent=False)  # derived: never saved

    def forward(self, ids: Tensor) -> Tensor:
        """ids (...) -> input gates (..., D*3H)."""
        return nn.functional.embedding(ids, self.table)


def quantize_int8(module: nn.Module, bounded_inputs: tuple = ()) -> nn.Module:
    """Swap module's nn.GRU and nn.Linear layers (attention's excepted) for the int8 ones, in place.

    bounded_inputs: names of Linear layers whose input is always within [-1, 1] (see int8_linear).
    GRU hidden states are; a GRU's initial hidden state must be too, for replies to stay
    independent of their batch mates.
    """
    for name, child in module.named_children():
        if name == "attn":  # 'concat' attention reads its Linear's weight directly
            continue
        if isinstance(child, nn.GRU):
            setattr(module, name, Int8GRU(child))
        elif isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child, bounded_input=name in bounded_inputs))
        else:
            quantize_int8(child, bounded_inputs)
    return module


def tabulate_input_gates(module: nn.Module) -> nn.Module:
    """Replace the `embedding` that feeds an int8 `gru` (the encoder's, the decoder's) by a GateTable.

    Inference only: the decoder's embedding dropout, between the two, must be off (eval mode).
    The encoder and the decoder share one embedding, but each gets a table for its own GRU.
    """
    embedding, gru = getattr(module, "embedding", None), getattr(module, "gru", None)
    if isinstance(embedding, nn.Embedding) and isinstance(gru, Int8GRU):
        if module.training:
            raise ValueError("gate tables are for inference: call .eval() first")
        module.embedding = GateTable(embedding, gru)
        gru.gate_input = True  # its first layer now reads the table's gates
    return module
